"""A conference driven through the bridge's Python API, with real peers answering the bridge's offers.

`Call.join(peer)` does what a focus would do: create the endpoint, offer the bridge's transport and the
sources of everyone already present, hand the peer's transport and sources to the bridge, then re-offer
every other peer with one more pair of m-lines so that it can route the newcomer's SSRCs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from bridge import Candidate, Conference, Endpoint, Source, TransportDescription
from tests.helpers.sdp import (
    BridgeOffer,
    OfferBuilder,
    PeerAnswer,
    RemoteParticipant,
    only_loopback,
    parse_answer,
)


class Peer(Protocol):
    """What `Call` needs from a participant (aiortc or Chromium)."""

    name: str

    async def answer(self, offer: BridgeOffer) -> str: ...

    def describe_for_bridge(self, answer: PeerAnswer) -> TransportDescription: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class Member:
    peer: Peer
    endpoint: Endpoint
    builder: OfferBuilder
    answer: PeerAnswer

    @property
    def sources(self) -> tuple[Source, ...]:
        return self.answer.sources

    def as_remote(self) -> RemoteParticipant:
        return RemoteParticipant(self.peer.name, self.sources)


class Call:
    def __init__(
        self,
        conference: Conference,
        *,
        candidate_filter: Callable[[Candidate], bool] | None = only_loopback,
        rtx: bool = True,
    ) -> None:
        self.conference = conference
        self.candidate_filter = candidate_filter
        self.rtx = rtx
        self.members: dict[str, Member] = {}

    async def join(self, peer: Peer, *, wait: bool = True, connect_within: float = 10.0) -> Member:
        """Adds `peer`; with `wait`, returns once its transport is connected (raises otherwise)."""
        endpoint = self.conference.create_endpoint(peer.name)
        builder = OfferBuilder(endpoint.local_description(), rtx=self.rtx)
        for other in self.members.values():
            builder.add(other.as_remote())
        answer = self._parse(peer, await peer.answer(builder.offer()))
        if not answer.sources:
            raise AssertionError(f"{peer.name}'s answer signals no source it sends")
        endpoint.set_remote_description(peer.describe_for_bridge(answer))
        endpoint.set_sources(answer.sources)
        member = Member(peer, endpoint, builder, answer)
        for other in list(self.members.values()):
            other.builder.add(member.as_remote())
            await self._renegotiate(other)
        self.members[peer.name] = member
        if wait:
            try:
                state = await endpoint.wait_state("connected", timeout=connect_within)
            except TimeoutError:
                raise AssertionError(
                    f"{peer.name}: transport still {endpoint.state!r} after {connect_within} s"
                ) from None
            if state != "connected":
                raise AssertionError(
                    f"{peer.name}: transport {state} ({endpoint.detail!r}), wanted connected"
                )
        return member

    async def leave(self, name: str, *, renegotiate: bool = False) -> None:
        """Expires the endpoint and closes the peer; optionally re-offers the others without it."""
        member = self.members.pop(name)
        member.endpoint.close()
        await member.peer.close()
        if renegotiate:
            for other in self.members.values():
                other.builder.remove(name)
                await self._renegotiate(other)

    async def _renegotiate(self, member: Member) -> None:
        answer = self._parse(member.peer, await member.peer.answer(member.builder.offer()))
        if (answer.transport.ufrag, answer.transport.pwd) != (
            member.answer.transport.ufrag,
            member.answer.transport.pwd,
        ):
            raise AssertionError(f"{member.peer.name} restarted ICE on a re-offer")
        if answer.sources != member.answer.sources:
            member.endpoint.set_sources(answer.sources)
        member.answer = answer

    def _parse(self, peer: Peer, sdp: str) -> PeerAnswer:
        return parse_answer(sdp, peer.name, candidate_filter=self.candidate_filter)

    async def close(self) -> None:
        for name in list(self.members):
            await self.leave(name)


async def wait_until(
    predicate: Callable[[], bool],
    *,
    within: float,
    interval: float = 0.2,
    describe: Callable[[], str] = lambda: "",
) -> float:
    """Polls `predicate` until true; returns the seconds it took. Raises AssertionError on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within:.0f} s: {describe()}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


async def wait_until_async(
    predicate: Callable[[], Awaitable[bool]],
    *,
    within: float,
    interval: float = 0.5,
    describe: Callable[[], Awaitable[str]] | None = None,
) -> float:
    """`wait_until` for predicates that must await (e.g. Chromium's getStats through Selenium)."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > within:
            detail = await describe() if describe is not None else ""
            raise AssertionError(f"condition not met within {within:.0f} s: {detail}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


def find_counter(stats: dict[str, object], word: str) -> tuple[str, int] | None:
    """The first integer counter in stats["total"] (or its "drops") whose name contains `word`."""
    total = stats.get("total")
    if not isinstance(total, dict):
        return None
    places: list[tuple[str, dict[str, object]]] = [("", total)]
    drops = total.get("drops")
    if isinstance(drops, dict):
        places.append(("drops.", drops))
    for prefix, place in places:
        for key, value in place.items():
            if word in str(key).lower() and isinstance(value, int):
                return prefix + str(key), value
    return None


def find_anywhere(tree: object, word: str, prefix: str = "") -> dict[str, object]:
    """Every leaf of a stats tree whose dotted path contains `word` (for clear failure messages)."""
    out: dict[str, object] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict):
                out |= find_anywhere(value, word, path + ".")
            elif word in path.lower():
                out[path] = value
    return out


def counter_names(stats: dict[str, object]) -> list[str]:
    total = stats.get("total")
    if not isinstance(total, dict):
        return [f"<no dict under 'total': keys {sorted(stats)}>"]
    names = [str(k) for k in total]
    drops = total.get("drops")
    if isinstance(drops, dict):
        names += [f"drops.{k}" for k in drops]
    return sorted(names)
