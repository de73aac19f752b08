"""docs/grafana-dashboard.json queries only series the exporters make (a renamed metric breaks this test,
not the operators' dashboard)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bridge.allocation import AllocationStats
from bridge.channel import ChannelStats
from bridge.load import IDLE
from bridge.metrics import BridgeMetrics, families, render_families
from bridge.quality import Quality
from signaling.metrics import focus_families, xmpp_families

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


def exported() -> set[str]:
    bridge = BridgeMetrics(
        snapshot={
            "total": {"drops": {"filtered": 1}}, "failures": {"ice": 0}, "io": {},
            "shards": [{"index": 0, "cpu_seconds": 1.5, "packets_in": 1, "packets_out": 2, "routers": 1,
                        "transports": 2}],
        },
        conferences=1, endpoints=1, load=IDLE, healthy=True, drain=False, graceful_shutdown=False,
        shutting_down=False, channels=ChannelStats(), private_http_refused={}, xmpp_iqs_refused=0,
        colibri2_refused={}, allocation=AllocationStats(), quality=(Quality(0.01, 0.0, 0.0, 1.0, 1.0),),
        admin={"admin_logins": 0},
        extra=(*xmpp_families({"token_refused_expired": 1}), *focus_families({}, {})),
    )  # fmt: skip
    body, _ = render_families(families(bridge), None)
    return {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def test_every_query_names_an_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    names = {n for e in exprs for n in re.findall(r"\bsluice_[a-z0-9_]+", e)}
    missing = names - exported()
    assert not missing, missing
    # Panels do not overlap on the grid (Grafana would push them around).
    cells = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))
