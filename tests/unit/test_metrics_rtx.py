"""The RTX cache's native counters reach the Prometheus exposition."""

from __future__ import annotations

from tests.helpers.metrics import exposition


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
    text = exposition({"total": total, "failures": {}, "io": {}})
    for line in (
        "sluice_nack_requested_total 4.0",
        'sluice_nack_cache_total{result="hit"} 5.0',
        'sluice_nack_cache_total{result="miss"} 2.0',
        "sluice_retransmitted_packets_total 3.0",
        "sluice_retransmitted_bytes_total 3600.0",
        "sluice_rtx_rate_limited_total 2.0",
    ):
        assert line in text.splitlines(), line


def test_each_shards_cpu_packets_conferences_and_endpoints_are_exported() -> None:
    shards = [
        {"index": 0, "cpu_seconds": 1.5, "routers": 3, "transports": 9, "packets_in": 10, "packets_out": 70},
        {"index": 1, "cpu_seconds": 0.5, "routers": 2, "transports": 4, "packets_in": 5, "packets_out": 15},
    ]
    lines = exposition({"total": {"drops": {}}, "failures": {}, "io": {}, "shards": shards}).splitlines()
    for line in (
        'sluice_shard_cpu_seconds_total{shard="0"} 1.5',
        'sluice_shard_cpu_seconds_total{shard="1"} 0.5',
        'sluice_shard_packets_total{direction="out",shard="0"} 70.0',
        'sluice_shard_packets_total{direction="in",shard="1"} 5.0',
        'sluice_shard_conferences{shard="0"} 3.0',
        'sluice_shard_endpoints{shard="1"} 4.0',
    ):
        assert line in lines, line


def test_no_metric_family_is_exported_twice() -> None:
    # Prometheus refuses a whole scrape whose text names a family twice ("second TYPE line"): the
    # bridge's NACK counter once was.
    total = {"packets_in": 1, "nack_requested": 4, "drops": {}}
    types = [
        line
        for line in exposition({"total": total, "failures": {}, "io": {}}).splitlines()
        if line.startswith("# TYPE")
    ]
    assert types and len(types) == len(set(types)), sorted(t for t in types if types.count(t) > 1)
