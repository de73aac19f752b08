"""Instructions per forwarded packet, counted (not timed) with callgrind: a per-commit figure that does not
depend on the machine's load, for the suite to compare with a committed baseline.

`native/core/examples/forward_instructions.rs` forwards a fixed run of SRTP packets through the shard's own
forwarding code (the criterion fan-out bench's in-memory conference: real DTLS-SRTP keys, a Router, every
receiver's protect) inside one `forward_all` function; callgrind counts the user-space instructions executed
in it (`--toggle-collect`), which divided by the egress packets it queued is the figure. Hardware counters
(`perf stat`) would count the same, but this machine's VM exposes none; callgrind needs none.

    python -m bench.instructions check     # measure, compare with the baseline, exit 1 above +10 %
    python -m bench.instructions update    # measure and write the baseline
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NATIVE = REPO / "native"
BASELINE = REPO / "bench" / "baselines" / "instructions.json"
#: Scenarios of the example: (name, packets in).
SCENARIOS: tuple[tuple[str, int], ...] = (
    ("rtp-gcm-10", 300),
    ("rtp-cm-10", 300),
    ("simulcast-gcm-30", 300),
    ("audio-gcm-50", 300),
)
#: How much worse than the baseline a figure may get before the check fails.
TOLERANCE = 0.10


class InstructionsError(RuntimeError):
    """The example or valgrind could not run, or gave no figure."""


@dataclass(frozen=True, slots=True)
class Figure:
    scenario: str
    instructions: int
    egress_packets: int

    @property
    def per_packet(self) -> float:
        return self.instructions / self.egress_packets


def build_example() -> Path:
    """Builds the example in release (the profile the bridge runs) and returns its path."""
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    subprocess.run(
        [cargo, "build", "--release", "-q", "-p", "sluice-core", "--example", "forward_instructions"],
        cwd=NATIVE,
        check=True,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", NATIVE / "target"))
    return target / "release" / "examples" / "forward_instructions"


def measure(example: Path, scenario: str, packets: int) -> Figure:
    """Runs one scenario under callgrind, counting only inside `forward_all`."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise InstructionsError("valgrind not found: install the Debian package valgrind")
    with tempfile.TemporaryDirectory(prefix="sluice-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            [
                valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", "--collect-atstart=no",
                "--toggle-collect=*forward_all*", str(example), scenario, str(packets),
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0 or not out.exists():
            raise InstructionsError(f"{scenario}: {proc.stderr.strip()[-1000:]}")
        totals = re.search(r"^totals:\s+(\d+)", out.read_text(), re.MULTILINE)
    egress = re.search(r"egress (\d+)", proc.stdout)
    if totals is None or egress is None or int(egress.group(1)) == 0:
        raise InstructionsError(f"{scenario}: no figure in {proc.stdout!r}")
    return Figure(scenario, int(totals.group(1)), int(egress.group(1)))


def measure_all() -> list[Figure]:
    example = build_example()
    return [measure(example, name, packets) for name, packets in SCENARIOS]


def compare(figures: list[Figure], baseline: dict[str, float]) -> list[str]:
    """One line per scenario; those over the tolerance start with FAIL."""
    lines = []
    for f in figures:
        base = baseline.get(f.scenario)
        if base is None:
            lines.append(f"FAIL {f.scenario}: {f.per_packet:.0f} instructions/packet, not in the baseline")
            continue
        change = f.per_packet / base - 1
        verdict = "FAIL" if change > TOLERANCE else "ok"
        lines.append(
            f"{verdict} {f.scenario}: {f.per_packet:.0f} instructions per egress packet "
            f"(baseline {base:.0f}, {change:+.1%})"
        )
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("check", "update"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        figures = measure_all()
    except (InstructionsError, subprocess.CalledProcessError) as exc:
        print(f"bench.instructions: {exc}", file=sys.stderr)
        return 2
    if argv[0] == "update":
        BASELINE.parent.mkdir(parents=True, exist_ok=True)
        BASELINE.write_text(
            json.dumps({f.scenario: round(f.per_packet, 1) for f in figures}, indent=2, sort_keys=True) + "\n"
        )
        for f in figures:
            print(f"{f.scenario}: {f.per_packet:.0f} instructions per egress packet")
        return 0
    lines = compare(figures, json.loads(BASELINE.read_text()))
    print("\n".join(lines))
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
