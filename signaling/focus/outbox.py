"""What the focus sends: stanzas in order, and the IQ requests still waiting for their answer.

Every part of the focus writes here; `FocusCore` drains it (`poll`) and feeds it replies and the time.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from signaling.focus import stanzas
from signaling.focus.stanzas import same_jid

OnReply = Callable[[float, ET.Element], None]
OnFailure = Callable[[float, ET.Element | None], None]  # None: timed out


def _ignore(_now: float, _el: ET.Element | None) -> None:
    return None


@dataclass(slots=True)
class _PendingIq:
    #: Where the request went: a reply counts only from there.
    to: str
    deadline: float
    on_result: OnReply
    on_error: OnFailure


class Outbox:
    """The stanzas to send, and one callback pair per IQ request until its reply or deadline."""

    def __init__(self, new_id: Callable[[], str], stats: Counter[str], *, iq_timeout: float) -> None:
        self.new_id = new_id
        self._stats = stats
        self._iq_timeout = iq_timeout
        self._out: deque[ET.Element] = deque()
        self._pending: dict[str, _PendingIq] = {}

    def send(self, el: ET.Element) -> None:
        self._out.append(el)

    def request(
        self,
        now: float,
        iq_type: str,
        to: str,
        payload: ET.Element,
        *,
        on_result: OnReply,
        on_error: OnFailure,
        timeout: float | None = None,
    ) -> str:
        iq_id = self.new_id()
        self._pending[iq_id] = _PendingIq(to, now + (timeout or self._iq_timeout), on_result, on_error)
        self.send(stanzas.iq(iq_type, to, iq_id, payload))
        return iq_id

    def fire(
        self, now: float, iq_type: str, to: str, payload: ET.Element, *, timeout: float | None = None
    ) -> None:
        """A request whose answer does not matter (a reply still clears it)."""
        self.request(now, iq_type, to, payload, on_result=_ignore, on_error=_ignore, timeout=timeout)

    def poll(self) -> ET.Element | None:
        return self._out.popleft() if self._out else None

    def handle_reply(self, now: float, el: ET.Element) -> None:
        """An IQ result or error: runs the callback of our request it answers, if it came from there."""
        iq_id = el.get("id", "")
        pending = self._pending.get(iq_id)
        if pending is None:
            return
        if not same_jid(el.get("from", ""), pending.to):
            # Someone else answering our request (a guessed id): ignored; the real reply still counts.
            self._stats["iq_replies_from_elsewhere"] += 1
            return
        del self._pending[iq_id]
        if el.get("type") == "result":
            pending.on_result(now, el)
        else:
            pending.on_error(now, el)

    def handle_timeout(self, now: float) -> None:
        for iq_id, pending in list(self._pending.items()):
            if pending.deadline <= now and self._pending.pop(iq_id, None) is not None:
                self._stats["iq_timeouts"] += 1
                pending.on_error(now, None)

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def clear(self) -> None:
        self._out.clear()
        self._pending.clear()
