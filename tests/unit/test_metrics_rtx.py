"""The RTX cache's native counters reach the Prometheus exposition."""

from __future__ import annotations

from bridge.load import LoadSample
from bridge.metrics import BridgeMetrics, render


def test_rtx_cache_counters_are_exported_from_the_native_total() -> None:
    total = {
        "packets_in": 10,
        "nack_requested": 4,
        "retransmitted": 3,
        "retransmitted_bytes": 3600,
        "nack_cache_hit": 5,
        "nack_cache_miss": 2,
        "rtx_rate_limited": 2,
        "drops": {},
    }
    m = BridgeMetrics(
        snapshot={"total": total, "failures": {}, "io": {}},
        conferences=1,
        endpoints=2,
        load=LoadSample(0, 0, 0, 0, 0),
        healthy=True,
        drain=False,
        graceful_shutdown=False,
        shutting_down=False,
    )
    body, _ = render(m, None)
    text = body.decode()
    for line in (
        "sluice_nack_requested_total 4.0",
        'sluice_nack_cache_total{result="hit"} 5.0',
        'sluice_nack_cache_total{result="miss"} 2.0',
        "sluice_retransmitted_packets_total 3.0",
        "sluice_retransmitted_bytes_total 3600.0",
        "sluice_rtx_rate_limited_total 2.0",
    ):
        assert line in text.splitlines(), line
