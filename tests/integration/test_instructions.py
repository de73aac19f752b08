"""The per-commit figure (issue 17): instructions per forwarded packet, counted with callgrind on fixed runs
through the shard's forwarding code (bench/instructions.py), against the committed baseline. Counted, not
timed, so the machine's load does not move it; a change that makes forwarding 10 % dearer fails here, and
`python -m bench.instructions update` records a deliberate one."""

from __future__ import annotations

import json

import pytest

from bench.instructions import BASELINE, SCENARIOS, TOLERANCE, Figure, build_example, compare, measure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_instructions_per_forwarded_packet_stay_within_the_baseline() -> None:
    baseline = json.loads(BASELINE.read_text())
    assert set(baseline) == {name for name, _ in SCENARIOS}
    example = build_example()
    figures = [measure(example, name, packets) for name, packets in SCENARIOS]
    lines = compare(figures, baseline)
    print("\n".join(lines))
    assert not [line for line in lines if line.startswith("FAIL")], lines
    # Each egress packet is one protect and a share of one unprotect: thousands of instructions, never
    # nothing (a broken toggle would count zero) and never the whole setup (a toggle that missed would
    # count the DTLS handshakes, millions).
    for f in figures:
        assert 500 < f.per_packet < 50_000, f


def test_the_comparison_fails_only_above_the_tolerance() -> None:
    base = {"a": 1000.0, "b": 1000.0, "c": 1000.0}
    over = int(1000 * (1 + TOLERANCE)) + 5
    lines = compare([Figure("a", 1090, 1), Figure("b", over, 1), Figure("d", 5, 1)], base)
    assert lines[0].startswith("ok a") and lines[1].startswith("FAIL b") and lines[2].startswith("FAIL d")
