"""Sans-IO quotas shared by the XMPP server and the focus: events per window, per key and in total.

`RateLimit.allow(key, now)` answers whether one more event for `key` fits in the last `window` seconds and,
if it does, records it. Keys whose window has emptied are forgotten on the next `prune`, so a stream of
distinct keys (anonymous JIDs, source addresses) cannot grow the table without bound: it holds at most the
keys seen in one window, each with at most `limit` timestamps.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable


class RateLimit:
    """At most `limit` events per key in any `window` seconds (a sliding window of timestamps)."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a rate limit needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._events: dict[Hashable, deque[float]] = {}
        self._pruned_at = 0.0

    def allow(self, key: Hashable, now: float) -> bool:
        """True and counted when one more event fits; False (and not counted) when it does not."""
        if now - self._pruned_at >= self.window:
            self.prune(now)
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def retry_after(self, key: Hashable, now: float) -> float:
        """Seconds until `key` may have one more event (0 when it may now)."""
        events = self._events.get(key)
        if not events or len(events) < self.limit:
            return 0.0
        return max(events[0] + self.window - now, 0.0)

    def prune(self, now: float) -> None:
        """Forgets keys with no event inside the window."""
        self._pruned_at = now
        for key in [k for k, ev in self._events.items() if not ev or ev[-1] <= now - self.window]:
            del self._events[key]

    def __len__(self) -> int:
        return len(self._events)
