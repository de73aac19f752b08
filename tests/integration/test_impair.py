"""The impairment relay (bench/impair.py) measured through the real path: a UDP probe sent from one
network namespace to another through the relay's middle namespace (tests/helpers/netns.py).

Rates are counted on the wire (Ethernet, IPv4 and UDP headers included), as the relay counts them. The
relay's own statistics must agree with what the receiver saw.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from typing import Any

import pytest

from tests.helpers.netns import Arrival, Link, Netlab, Receiver, send_paced, wire_kbps

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PORT = 5000


def _probe(netlab: Netlab, impair: dict[str, Any]) -> tuple[Link, socket.socket, Receiver]:
    """A sender namespace and a receiver namespace joined through the relay; the sender's socket and the
    started receiver."""
    link = netlab.link(netlab.namespace("snd"), netlab.namespace("rcv"), impair)
    rx = link.b.socket()
    rx.bind((link.b_addr, PORT))
    tx = link.a.socket()
    return link, tx, Receiver(rx).start()


def _dropped(stats: dict[str, Any], direction: str = "a-to-b") -> dict[str, int]:
    return {k: v for k, v in stats["directions"][direction]["dropped"].items() if v}


def test_rate_cap_delivers_the_cap(netlab: Netlab) -> None:
    link, tx, rx = _probe(netlab, {"a-to-b": {"rate-kbps": 500, "queue-ms": 100}})
    sent = send_paced(tx, (link.b_addr, PORT), rate_kbps=1000, duration=4.0)
    arrivals = rx.stop(linger=0.3)
    # After the first second the queue is full and the link drains at its rate.
    delivered = wire_kbps(arrivals, sent.start + 1.0, sent.end)
    assert 450 <= delivered <= 550, f"{delivered:.0f} kbit/s delivered of a 500 kbit/s cap"
    stats = link.fresh_stats()
    assert _dropped(stats) == {"queue_full": sent.count - len(arrivals)}
    queue_delay = stats["directions"]["a-to-b"]["queue_delay_ms"]
    # A full 100 ms queue: the packets that got in waited up to 100 ms.
    assert 80 <= queue_delay["p90"] <= 105, queue_delay


def _one_way_ms(arrivals: list[Arrival]) -> list[float]:
    return sorted((a.received - a.sent) * 1000 for a in arrivals)


def test_delay_adds_its_delay_one_way(netlab: Netlab) -> None:
    link, tx, rx = _probe(netlab, {"a-to-b": {"delay-ms": 100}})
    sent = send_paced(tx, (link.b_addr, PORT), rate_kbps=1000, count=200)
    forward = _one_way_ms(rx.stop(linger=0.3))
    assert len(forward) == sent.count
    # Never early; on time within the timer's granularity.
    assert forward[0] >= 99.9, forward[:5]
    assert 100 <= statistics.median(forward) <= 110, statistics.quantiles(forward, n=10)

    # The other direction is not delayed.
    back_rx = Receiver(tx).start()
    back_tx = link.b.socket()
    send_paced(back_tx, (link.a_addr, tx.getsockname()[1]), rate_kbps=1000, count=50)
    back = _one_way_ms(back_rx.stop(linger=0.2))
    assert len(back) == 50
    assert statistics.median(back) < 5, back


def test_random_loss_loses_its_share(netlab: Netlab) -> None:
    link, tx, rx = _probe(netlab, {"a-to-b": {"loss-pct": 2}})
    sent = send_paced(tx, (link.b_addr, PORT), rate_kbps=20_000, count=5000)
    arrivals = rx.stop(linger=0.3)
    lost = sent.count - len(arrivals)
    assert 0.01 <= lost / sent.count <= 0.03, f"{lost} of {sent.count} lost"
    stats = link.fresh_stats()
    assert _dropped(stats) == {"random_loss": lost}
    assert stats["directions"]["a-to-b"]["packets_in"] == sent.count


def _crossing(arrivals: list[Arrival], start: float, end: float, below: bool, level: float) -> float | None:
    """The first time t in [start, end) at which the rate over the trailing 250 ms is below (or above)
    `level`."""
    window = 0.25
    t = start
    while t < end:
        rate = wire_kbps(arrivals, t - window, t)
        if (rate < level) if below else (rate > level):
            return t
        t += 0.02
    return None


def test_capacity_steps_on_schedule(netlab: Netlab) -> None:
    impair = {
        "a-to-b": {
            "rate-kbps": 2000,
            "queue-ms": 100,
            "steps": [{"at-s": 2, "rate-kbps": 500}, {"at-s": 4, "rate-kbps": 2000}],
        }
    }
    link, tx, rx = _probe(netlab, impair)
    epoch = link.restart_schedule()
    sent = send_paced(tx, (link.b_addr, PORT), rate_kbps=3000, duration=6.0)
    arrivals = rx.stop(linger=0.3)
    assert sent.start - epoch < 0.5

    down = _crossing(arrivals, epoch + 1.0, epoch + 4.0, below=True, level=1250)
    assert down is not None and abs(down - (epoch + 2)) <= 1.0, down and down - epoch
    up = _crossing(arrivals, down, epoch + 6.0, below=False, level=1250)
    assert up is not None and abs(up - (epoch + 4)) <= 1.0, up and up - epoch
    for start, end, kbps in ((0.5, 2, 2000), (2.5, 4, 500), (4.5, 6, 2000)):
        rate = wire_kbps(arrivals, epoch + start, epoch + end)
        assert abs(rate - kbps) <= 0.1 * kbps, f"{rate:.0f} kbit/s over [{start}, {end}) s, want {kbps}"
    assert link.fresh_stats()["directions"]["a-to-b"]["step"] == 2


def test_sustains_5_mbits_with_delay_and_jitter(netlab: Netlab) -> None:
    impair = {"a-to-b": {"rate-kbps": 10_000, "delay-ms": 20, "jitter-ms": 5}, "b-to-a": {"delay-ms": 20}}
    link, tx, rx = _probe(netlab, impair)
    sent = send_paced(tx, (link.b_addr, PORT), rate_kbps=5000, duration=3.0)
    arrivals = rx.stop(linger=0.3)
    assert len(arrivals) == sent.count, f"{sent.count - len(arrivals)} of {sent.count} lost"
    assert [a.seq for a in arrivals] == list(range(sent.count)), "reordered without reorder = true"
    one_way = _one_way_ms(arrivals)
    assert one_way[0] >= 19.9
    assert statistics.median(one_way) <= 30, statistics.quantiles(one_way, n=10)
    stats = link.stop_relay()
    assert stats is not None and not _dropped(stats)
    assert stats["directions"]["a-to-b"]["packets_out"] == sent.count


def test_tcp_passes_whole(netlab: Netlab) -> None:
    """TCP between namespaces arrives as GSO frames with checksums left to the receiver; the relay's
    virtio-net header carries both, so a stream passes intact."""
    link = netlab.link(netlab.namespace("cli"), netlab.namespace("srv"), {"a-to-b": {"delay-ms": 5}})
    listener = link.b.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((link.b_addr, PORT))
    listener.listen()
    listener.settimeout(5)
    payload = bytes(range(256)) * 8192  # 2 MiB
    received = bytearray()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            while chunk := conn.recv(1 << 16):
                received.extend(chunk)

    server = threading.Thread(target=serve)
    server.start()
    client = link.a.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect((link.b_addr, PORT))
    began = time.monotonic()
    client.sendall(payload)
    client.close()
    server.join(10)
    listener.close()
    assert bytes(received) == payload, f"{len(received)} of {len(payload)} bytes, {time.monotonic() - began}s"
    stats = link.fresh_stats()
    assert stats["directions"]["b-to-a"]["bypassed"] >= 1  # the ARP reply, passed unimpaired
    assert not _dropped(stats) and not _dropped(stats, "b-to-a")


def test_routed_through_a_hub_with_tbf(netlab: Netlab) -> None:
    """A sender behind a plain link with a kernel rate cap (tbf), a hub that routes, and a receiver
    behind the relay: the flow gets both, addressed end to end."""
    sender, hub, receiver = netlab.namespace("snd"), netlab.namespace("hub"), netlab.namespace("rcv")
    uplink = netlab.link(sender, hub)
    downlink = netlab.link(hub, receiver, {"a-to-b": {"delay-ms": 50}})
    netlab.default_route(sender, uplink)
    netlab.default_route(receiver, downlink)
    uplink.tbf("a-to-b", rate_kbit=2000, latency_ms=50)
    rx = receiver.socket()
    rx.bind((downlink.b_addr, PORT))
    probe = Receiver(rx).start()
    sent = send_paced(sender.socket(), (downlink.b_addr, PORT), rate_kbps=4000, duration=2.5)
    arrivals = probe.stop(linger=0.3)
    # tbf counts Ethernet frames too.
    delivered = wire_kbps(arrivals, sent.start + 0.5, sent.end)
    assert abs(delivered - 2000) <= 200, f"{delivered:.0f} kbit/s through a 2000 kbit tbf"
    assert _one_way_ms(arrivals)[0] >= 50
    assert {a.size for a in arrivals} == {1200}
