"""`videobridge.shard.cpu`: the media thread runs on its CPU alone; the control plane keeps off it.

On a shared host a peer woken by the shard's own sends (a co-located load generator, TURN server or
focus) is placed on the shard's CPU by the kernel and preempts it mid-batch: that was the bench's latency
tail. Pinning is the operator's fix; this checks it does what it says, on this machine's real CPUs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.run import _lower_control_plane
from bridge import Bridge, BridgeConfig
from bridge.bridge import SHARD_THREAD_PREFIX

pytestmark = pytest.mark.integration


def _threads() -> dict[int, tuple[str, set[int]]]:
    """Each thread of this process: its name and the CPUs it may run on."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            out[int(tid)] = (comm, os.sched_getaffinity(int(tid)))
        except OSError:
            continue
    return out


@pytest.fixture
def restored_affinity() -> Iterator[set[int]]:
    """The CPUs this process had; every thread gets them back afterwards."""
    before = os.sched_getaffinity(0)
    yield before
    for tid in _threads():
        try:
            os.sched_setaffinity(tid, before)
        except OSError:
            continue


async def test_a_pinned_shard_has_its_cpu_and_the_other_threads_keep_off_it(
    restored_affinity: set[int],
) -> None:
    cpu = max(restored_affinity)
    bridge = Bridge(BridgeConfig(udp_port=0, bind_addresses=["127.0.0.1"], shard_cpus=[cpu]))
    await bridge.start()
    try:
        threads = _threads()
        shards = [cpus for name, cpus in threads.values() if name.startswith(SHARD_THREAD_PREFIX)]
        assert {cpu} in shards, threads
        others = restored_affinity - {cpu}
        for name, cpus in threads.values():
            if not name.startswith(SHARD_THREAD_PREFIX):
                # With one CPU there is nowhere else to go: the control plane stays where it was.
                assert cpus == (others or restored_affinity), (name, cpus)
    finally:
        await bridge.stop()


async def test_two_shards_each_pinned_to_its_own_cpu(restored_affinity: set[int]) -> None:
    if len(restored_affinity) < 2:
        pytest.skip("needs two CPUs")
    cpus = sorted(restored_affinity)[-2:]
    bridge = Bridge(BridgeConfig(udp_port=0, bind_addresses=["127.0.0.1"], shards=2, shard_cpus=cpus))
    await bridge.start()
    try:
        pinned = {name: c for name, c in _threads().values() if name.startswith(SHARD_THREAD_PREFIX)}
        assert pinned == {"sluice-shard-0": {cpus[0]}, "sluice-shard-1": {cpus[1]}}, pinned
    finally:
        await bridge.stop()


async def test_a_cpu_the_process_may_not_use_is_refused_at_start(restored_affinity: set[int]) -> None:
    bridge = Bridge(BridgeConfig(udp_port=0, bind_addresses=["127.0.0.1"], shard_cpus=[1023]))
    with pytest.raises(OSError, match="CPU 1023"):
        await bridge.start()
    # Nothing moved: the refusal came before any thread was touched.
    assert all(cpus == restored_affinity for _, cpus in _threads().values())
    # A second shard refused stops the first one started: no shard thread is left behind.
    cpu = max(restored_affinity)
    config = BridgeConfig(udp_port=0, bind_addresses=["127.0.0.1"], shards=2, shard_cpus=[cpu, 1023])
    with pytest.raises(OSError, match="CPU 1023"):
        await Bridge(config).start()
    assert not [n for n, _ in _threads().values() if n.startswith(SHARD_THREAD_PREFIX)]


def test_the_bench_lowers_the_bridges_control_plane_and_not_its_shard() -> None:
    # A stand-in process: a main thread and one named as a shard (PR_SET_NAME = 15).
    script = (
        "import ctypes, threading, time\n"
        "def shard():\n"
        "    ctypes.CDLL(None).prctl(15, b'sluice-shard-0', 0, 0, 0)\n"
        "    time.sleep(30)\n"
        "threading.Thread(target=shard, daemon=True).start()\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 10
        names: dict[int, str] = {}
        while "sluice-shard-0" not in names.values() and time.monotonic() < deadline:
            names = {
                int(t): Path(f"/proc/{proc.pid}/task/{t}/comm").read_text().strip()
                for t in os.listdir(f"/proc/{proc.pid}/task")
            }
            time.sleep(0.01)
        assert "sluice-shard-0" in names.values(), names
        _lower_control_plane(proc.pid)
        policy = {name: os.sched_getscheduler(tid) for tid, name in names.items()}
        assert policy.pop("sluice-shard-0") == os.SCHED_OTHER
        assert policy and set(policy.values()) == {os.SCHED_IDLE}, policy
    finally:
        proc.kill()
        proc.wait()
