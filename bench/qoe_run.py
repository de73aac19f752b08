"""`sluice bench` impairment scenarios: Chromium receivers behind the impairment relay, scored for QoE.

A scenario file with an `[impair]` table is one of these (bench/scenarios/impair-*.toml):

```toml
name = "impair-cap-500k"
description = "..."
duration = "60s"           # sampled from the moment the receiver puts the first sender on stage
senders = 3                # Chromium simulcast senders beside the server (unimpaired)
steady-after = "10s"       # layer switches are counted after this
settings = "..."           # optional: more bridge settings (TOML); trust-bwe is always on
[impair]                   # bench/impair.py's configuration: a-to-b is the receiver's downlink
seed = 1
[impair.a-to-b]
rate-kbps = 500
[criteria]                 # optional; each judged on the scorecard (bench/qoe.py)
time-to-720p = "10s"
longest-stall = "0.5s"
freeze = "1s"              # total freeze time (Chromium's totalFreezesDuration)
switches-per-min = 4
overshoot-pct = 10         # the bridge's send rate over the capacity, 1 s windows
audio-loss-pct = 0         # audio RTP packets lost
audio-concealed-pct = 0.5  # audio concealed (after RED), where RED repairs loss
video-loss-pct = 1         # after RTX
```

The run: a fresh `Netlab` (network namespaces need root), `sluice serve` with trust-bwe on, the senders and
the receiver joining (tests/helpers/impaired.py), the receiver pinning the first sender (720p wanted); the
relay's schedule restarts then (capacity steps count from there) and `QoeSampler` samples every 200 ms for
`duration`. Written to `<out>/<name>.json` (scenario, samples, scorecard, the relay's final statistics),
`<name>.svg` (estimate, allocation and delivered rate against capacity; frame height) and `<name>.md`.

It drives Chromium through the test harness (tests/helpers), so it runs from a checkout with the test
dependencies (Selenium) installed, as root.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.impair import ConfigError, parse_config
from bench.qoe import Criteria, Sample, Scorecard, markdown_table, samples_json, score, svg_plot
from bench.scenario import ScenarioError, load_file
from bridge.settings import parse_duration

TRUST_BWE = "[videobridge.cc]\ntrust-bwe = true\n"


@dataclass(frozen=True, slots=True)
class ImpairScenario:
    name: str
    impair: dict[str, Any]
    description: str = ""
    duration: float = 60.0
    senders: int = 3
    steady_after_s: float = 10.0
    settings: str = ""
    criteria: Criteria = field(default_factory=Criteria)


def is_impair_scenario(path: str | Path) -> bool:
    """Whether the scenario file has an `[impair]` table (read errors are load_impair_scenario's to say)."""
    try:
        return "impair" in tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False


def _seconds(where: str, value: object) -> float:
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    if not seconds >= 0:
        raise ScenarioError(f"{where}: must not be negative")
    return seconds


def _number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ScenarioError(f"{where}: expected a number >= 0, got {value!r}")
    return float(value)


_CRITERIA: dict[str, tuple[str, Callable[[str, object], float]]] = {
    "time-to-720p": ("max_time_to_720p_s", _seconds),
    "longest-stall": ("max_longest_stall_s", _seconds),
    "freeze": ("max_freeze_s", _seconds),
    "switches-per-min": ("max_switches_per_min", _number),
    "overshoot-pct": ("max_overshoot_pct", _number),
    "audio-loss-pct": ("max_audio_loss_pct", _number),
    "audio-concealed-pct": ("max_audio_concealed_pct", _number),
    "video-loss-pct": ("max_video_loss_pct", _number),
}


def parse_impair_scenario(text: str, default_name: str = "scenario") -> ImpairScenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not TOML: {exc}") from None
    known = {"name", "description", "duration", "senders", "steady-after", "settings", "impair", "criteria"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScenarioError(
            f"unknown key {unknown[0]} (an impairment scenario has {', '.join(sorted(known))})"
        )
    impair = data.get("impair")
    if not isinstance(impair, dict):
        raise ScenarioError("impair: expected a table (bench/impair.py's configuration)")
    try:
        parse_config(impair)
    except ConfigError as exc:
        raise ScenarioError(f"impair: {exc}") from None
    criteria_t = data.get("criteria", {})
    if not isinstance(criteria_t, dict):
        raise ScenarioError("criteria: expected a table")
    unknown = sorted(set(criteria_t) - set(_CRITERIA))
    if unknown:
        raise ScenarioError(f"unknown key criteria.{unknown[0]} (known: {', '.join(_CRITERIA)})")
    criteria = Criteria(
        **{_CRITERIA[k][0]: _CRITERIA[k][1](f"criteria.{k}", v) for k, v in criteria_t.items()}
    )
    name, description, settings = (
        data.get("name", default_name),
        data.get("description", ""),
        data.get("settings", ""),
    )
    for key, value in (("name", name), ("description", description), ("settings", settings)):
        if not isinstance(value, str):
            raise ScenarioError(f"{key}: expected a string")
    senders = data.get("senders", 3)
    if isinstance(senders, bool) or not isinstance(senders, int) or not 1 <= senders <= 5:
        raise ScenarioError("senders: 1..5 (each is a Chromium)")
    duration = _seconds("duration", data.get("duration", 60))
    if not 5 <= duration <= 600:
        raise ScenarioError("duration: 5 s .. 10 min")
    return ImpairScenario(
        name=name,
        impair=impair,
        description=description,
        duration=duration,
        senders=senders,
        steady_after_s=_seconds("steady-after", data.get("steady-after", 10)),
        settings=settings,
        criteria=criteria,
    )


def load_impair_scenario(path: str | Path) -> ImpairScenario:
    return load_file(path, parse_impair_scenario)


async def run_impaired(
    scenario: ImpairScenario, *, progress: Callable[[str], None] | None = None
) -> tuple[dict[str, Any], list[Sample], Scorecard]:
    """One run of `scenario`; returns the JSON result, the samples and the scorecard."""
    if os.geteuid() != 0:
        from bench.run import BenchError  # noqa: PLC0415

        raise BenchError("impairment scenarios need root (network namespaces)")
    # The harness lives with the tests (Selenium, the namespaces); imported only when such a bench runs.
    from tests.helpers.impaired import impaired_call, sampler, stage  # noqa: PLC0415
    from tests.helpers.netns import Netlab  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="sluice-qoe-") as tmp:
        workdir = Path(tmp)
        lab = Netlab(workdir / "netlab")
        try:
            async with impaired_call(lab, workdir, scenario.impair, TRUST_BWE + scenario.settings) as call:
                if progress:
                    progress(f"{scenario.name}: {scenario.senders} senders and the receiver joining\n")
                staged = await stage(call, scenario.senders)
                qs = sampler(call, staged)
                qs.started = call.link.restart_schedule()

                def tick(sample: Sample) -> None:
                    if progress and sample.page is not None:
                        b = sample.bridge
                        est = b.estimate_bps if b and b.estimate_bps else 0
                        alloc = b.allocated_bps if b and b.allocated_bps is not None else 0
                        progress(
                            f"\r{scenario.name} {sample.t:5.1f}/{scenario.duration:.0f} s  "
                            f"{sample.page.frame_height:4d}p  estimate {est / 1000:6.0f}  "
                            f"allocated {alloc / 1000:6.0f} kbit/s   "
                        )

                samples = await qs.run(scenario.duration, tick)
                if progress:
                    progress("\n")
                # The receiver's recent allocation decisions (layers and their measured bitrates), to
                # tell why it got what it did.
                try:
                    decisions = (await call.decisions()).get(staged.receiver.nick, [])
                except Exception as e:  # a debug aid: the run's figures stand without it
                    decisions = [{"error": str(e)}]
                relay = call.link.stop_relay()
                errors = dict(qs.errors)
        finally:
            lab.close()
    card = score(samples, steady_after_s=scenario.steady_after_s, criteria=scenario.criteria)
    result = {
        "scenario": {
            "name": scenario.name,
            "description": scenario.description,
            "duration_s": scenario.duration,
            "senders": scenario.senders,
            "steady_after_s": scenario.steady_after_s,
            "impair": scenario.impair,
            "criteria": {k: v for k, v in asdict(scenario.criteria).items() if v is not None},
            "settings": TRUST_BWE + scenario.settings,
        },
        "scorecard": card.to_json(),
        "sample_errors": errors,
        "relay": relay,
        "samples": samples_json(samples),
        "decisions": decisions,
        "passed": all(card.passed.values()),
    }
    return result, samples, card


def write_results(result: Mapping[str, Any], samples: list[Sample], card: Scorecard, out: Path) -> list[Path]:
    """`<out>/<name>.json`, `.svg` and `.md`; returns their paths."""
    name = str(result["scenario"]["name"])
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.svg", out / f"{name}.md"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    paths[1].write_text(svg_plot(samples, f"{name}: receiver behind the relay"))
    paths[2].write_text(markdown_table([(name, card)]))
    return paths
