"""What the bridge's /metrics serves for a given state, for tests of single families."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.load import IDLE
from bridge.metrics import BridgeMetrics, render


def exposition(snapshot: Mapping[str, object] | None, **fields: Any) -> str:
    """The exposition text for `snapshot` on an otherwise idle, healthy bridge; `fields` set other
    BridgeMetrics fields (conferences, allocation, ...)."""
    state: dict[str, Any] = {
        "conferences": 0,
        "endpoints": 0,
        "load": IDLE,
        "healthy": True,
        "drain": False,
        "graceful_shutdown": False,
        "shutting_down": False,
    }
    state.update(fields)
    return render(BridgeMetrics(snapshot=snapshot, **state), None)[0].decode()
