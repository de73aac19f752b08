"""Sans-IO watch over what one peer has not taken yet: a byte bound and a stall timeout.

The adapter reports, after each write and when woken at `deadline`, how many bytes wait for the peer (its own
queue plus the transport's buffers) and how many it has handed over in total. The peer is a slow reader when
more than `max_bytes` wait, or when output has waited for `stall_timeout` seconds without the peer taking a
byte. Only bytes above the kernel's socket buffer show up here, so a peer that is merely idle never stalls.
"""

from __future__ import annotations

import enum


class SlowReader(enum.Enum):
    """Why a peer was cut off; the value is its counter in `stats()`."""

    OVER_LIMIT = "slow_consumers_over_limit"
    STALLED = "slow_consumers_stalled"


class SendMonitor:
    def __init__(self, max_bytes: int, stall_timeout: float) -> None:
        if max_bytes < 1 or stall_timeout <= 0:
            raise ValueError("a send queue needs max_bytes >= 1 and stall_timeout > 0")
        self.max_bytes = max_bytes
        self.stall_timeout = stall_timeout
        #: When to call `check` again if nothing is written before then (None: nothing waits).
        self.deadline: float | None = None
        self._taken = 0  # most bytes the peer had taken at any check
        self._since: float | None = None  # last check that saw the peer take something, or output appear

    def check(self, now: float, queued: int, written: int) -> SlowReader | None:
        """`queued`: bytes waiting now; `written`: bytes handed to the link since it opened."""
        if queued > self.max_bytes:
            return SlowReader.OVER_LIMIT
        if queued <= 0:
            self._taken = written
            self._since = None
            self.deadline = None
            return None
        # `written - queued` is an estimate (a TLS record or a compressed frame changes the size on the way),
        # so only a new high counts as progress; a stalled peer's estimate never rises.
        taken = written - queued
        if self._since is None or taken > self._taken:
            self._taken = max(self._taken, taken)
            self._since = now
        elif now - self._since >= self.stall_timeout:
            return SlowReader.STALLED
        self.deadline = self._since + self.stall_timeout
        return None
