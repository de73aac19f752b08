"""bridge/quality.py: per-endpoint figures from native snapshots, and their bounded aggregates."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bridge.metrics import render_families
from bridge.quality import Quality, QualityTracker, families


def snapshot(**transports: dict[str, Any]) -> dict[str, object]:
    return {"transports": {int(k.removeprefix("t")): v for k, v in transports.items()}}


def figures(received: int, lost: int, bytes_in: int, bytes_out: int, **more: Any) -> dict[str, Any]:
    return {"rtp_received": received, "rtp_lost": lost, "bytes_in": bytes_in, "bytes_out": bytes_out} | more


def test_loss_and_bitrates_over_a_whole_window() -> None:
    q = QualityTracker(window=2.0)
    q.update(0.0, snapshot(t1=figures(1000, 0, 0, 0, rtt_ms=20.0, jitter_ms=3.0)))
    first = q.get(1)
    assert first == Quality(0.02, 0.003, None, None, None)
    # Within the window: RTT and jitter follow, the rates wait for a whole window.
    q.update(1.0, snapshot(t1=figures(1500, 10, 50_000, 100_000, rtt_ms=30.0, jitter_ms=4.0)))
    assert q.get(1) == Quality(0.03, 0.004, None, None, None)
    q.update(2.0, snapshot(t1=figures(1950, 50, 250_000, 500_000, rtt_ms=30.0, jitter_ms=4.0)))
    got = q.get(1)
    assert got is not None
    assert got.loss == 50 / 1000  # 950 received + 50 lost expected over the window
    assert got.up_bps == 250_000 * 8 / 2 and got.down_bps == 500_000 * 8 / 2
    # The next window starts from there; duplicates (lost going down) count as no loss, not negative.
    q.update(4.0, snapshot(t1=figures(2950, 40, 250_000, 500_000)))
    got = q.get(1)
    assert got is not None and got.loss == 0.0 and got.up_bps == 0.0 and got.rtt_s is None


def test_gone_transports_are_forgotten_and_bad_values_ignored() -> None:
    q = QualityTracker()
    q.update(0.0, snapshot(t1=figures(1, 0, 0, 0), t2=figures(1, 0, 0, 0)))
    q.update(0.5, snapshot(t2=figures(1, 0, 0, 0, rtt_ms=float("nan"), jitter_ms="x")))
    assert q.get(1) is None
    assert q.get(2) == Quality(None, 0.0, None, None, None)
    q.update(1.0, {"transports": "nonsense"})  # no transports section: nothing changes
    assert set(q.current) == {2}
    q.update(1.0, {"transports": {"not-an-id": {}, 3: "not-a-dict", 2: figures(2, 0, 0, 0)}})
    assert set(q.current) == {2}


def parsed(qualities: list[Quality]) -> dict[str, float]:
    body, _ = render_families(families(qualities), None)
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_aggregates_are_histograms_whose_series_do_not_grow_with_endpoints() -> None:
    one = parsed([Quality(0.03, 0.004, 0.0, 300e3, 900e3)])
    many = parsed([Quality(0.03 * (i % 7), 0.004, 0.01 * (i % 3), 300e3, 900e3) for i in range(500)])
    assert one.keys() == many.keys()
    assert one['sluice_endpoint_rtt_seconds_bucket{le="0.05"}'] == 1
    assert one['sluice_endpoint_rtt_seconds_bucket{le="0.025"}'] == 0
    assert one['sluice_endpoint_bitrate_bps_bucket{direction="down",le="1000000.0"}'] == 1
    assert one['sluice_endpoint_bitrate_bps_gsum{direction="up"}'] == 300e3
    assert many['sluice_endpoint_loss_ratio_bucket{le="+Inf"}'] == 500
    assert many['sluice_endpoint_loss_ratio_bucket{le="0.0"}'] == 167  # i % 3 == 0
    # Endpoints without a figure are left out of that histogram only.
    partial = parsed([Quality(None, 0.0, None, None, None), Quality(0.01, 0.0, 0.0, 1.0, 1.0)])
    assert partial['sluice_endpoint_rtt_seconds_bucket{le="+Inf"}'] == 1
    assert partial['sluice_endpoint_jitter_seconds_bucket{le="+Inf"}'] == 2
