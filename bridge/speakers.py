"""Dominant speaker detection from RFC 6464 audio levels, per conference (sans-IO: the caller passes time).

The packet path reads each audio packet's level and hands one batch per conference every tick (200 ms):
per endpoint, a loudness (127 minus the mean level in -dBov: 0 silence, 127 full scale) and whether any
packet said voice. Each endpoint keeps a short average (about the last 0.4 s) of its loudness. An endpoint
speaks while its short average is above `SPEECH_LOUDNESS`; a speaker takes over from the dominant one after
speaking for `TAKEOVER_TICKS` ticks in a row, when it is louder by `MARGIN` or the dominant one stopped. So a
cough does not switch the stage, and two people talking over each other do not flap. With silence detection
on (jvb `speech-activity.enable-silence-detection`), nobody speaking for the timeout reports silence.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Short-average weight of each new tick (0.5: about the last two ticks, 0.4 s).
SHORT_WEIGHT = 0.5
#: Loudness above which an endpoint is speaking: a level of about -60 dBov or louder. Background noise
#: through a browser's audio processing stays well below; speech is typically -20 to -50 dBov.
SPEECH_LOUDNESS = 67.0
#: How much louder a challenger must be than a still-speaking dominant speaker.
MARGIN = 6.0
#: Ticks a challenger must speak in a row before it takes over (0.4 s at 200 ms ticks).
TAKEOVER_TICKS = 2


@dataclass(frozen=True, slots=True)
class SpeechActivityConfig:
    """jvb.conf `videobridge.speech-activity`."""

    recent_speakers_count: int = 10
    enable_silence_detection: bool = False
    silence_detection_timeout: float = 3.0


@dataclass(frozen=True, slots=True)
class SpeakerChange:
    """What DominantSpeakerEndpointChangeEvent says: the dominant speaker (None before anyone spoke), the
    previous ones (most recent first), and whether the conference is silent."""

    dominant: str | None
    previous: tuple[str, ...]
    silence: bool


@dataclass(slots=True)
class _Talker:
    short: float = 0.0
    speaking_ticks: int = 0


@dataclass(slots=True)
class ConferenceSpeakers:
    """One conference's speech activity."""

    config: SpeechActivityConfig = field(default_factory=SpeechActivityConfig)
    dominant: str | None = None
    silence: bool = False
    #: Most recent first, the dominant one included.
    recent: deque[str] = field(default_factory=deque)
    _talkers: dict[str, _Talker] = field(default_factory=dict)
    _last_speech: float | None = None

    def update(
        self, now: float, levels: Mapping[str, tuple[int, bool]], members: Iterable[str]
    ) -> SpeakerChange | None:
        """One tick of levels (endpoints not in `levels` were silent); returns the change, if any."""
        members = set(members)
        for gone in self._talkers.keys() - members:
            self.forget(gone)
        for ep in members:
            t = self._talkers.setdefault(ep, _Talker())
            loudness = float(levels[ep][0]) if ep in levels else 0.0
            t.short += SHORT_WEIGHT * (loudness - t.short)
            t.speaking_ticks = t.speaking_ticks + 1 if t.short >= SPEECH_LOUDNESS else 0
        speaking = [(t.short, ep) for ep, t in self._talkers.items() if t.speaking_ticks > 0]
        if speaking:
            self._last_speech = now
        change: SpeakerChange | None = None
        current = self._talkers.get(self.dominant) if self.dominant is not None else None
        challengers = [
            (short, ep)
            for short, ep in speaking
            if ep != self.dominant
            and self._talkers[ep].speaking_ticks >= TAKEOVER_TICKS
            and (current is None or current.speaking_ticks == 0 or short > current.short + MARGIN)
        ]
        if challengers:
            _, winner = max(challengers)
            self.dominant, self.silence = winner, False
            if winner in self.recent:
                self.recent.remove(winner)
            self.recent.appendleft(winner)
            while len(self.recent) > max(self.config.recent_speakers_count, 1):
                self.recent.pop()
            change = self._change()
        elif self._silent(now):
            self.silence = True
            change = self._change()
        elif self.silence and speaking:
            # The dominant one speaks again after a silence.
            self.silence = False
            change = self._change()
        return change

    def forget(self, endpoint_id: str) -> None:
        """An endpoint left: it is no longer a speaker (the next to speak takes over at once)."""
        self._talkers.pop(endpoint_id, None)
        if endpoint_id in self.recent:
            self.recent.remove(endpoint_id)
        if self.dominant == endpoint_id:
            self.dominant = None

    def order(self, members: Iterable[str]) -> list[str]:
        """Endpoints in speaker order for the allocation: the dominant one, the recent ones, then the rest
        in the order given."""
        members = list(members)
        present = set(members)
        first = [ep for ep in self.recent if ep in present]
        return first + [ep for ep in members if ep not in first]

    def view(self) -> dict[str, Any]:
        """The REST `dominant-speaker-identification` view."""
        return {
            "dominantSpeaker": self.dominant,
            "silence": self.silence,
            "recentSpeakers": list(self.recent),
            "endpoints": {
                ep: {"loudness": round(t.short, 1), "speaking": t.speaking_ticks > 0}
                for ep, t in sorted(self._talkers.items())
            },
        }

    def _silent(self, now: float) -> bool:
        if not self.config.enable_silence_detection or self.silence or self.dominant is None:
            return False
        since = self._last_speech
        return since is None or now - since >= self.config.silence_detection_timeout

    def _change(self) -> SpeakerChange:
        previous = tuple(ep for ep in self.recent if ep != self.dominant)
        return SpeakerChange(self.dominant, previous, self.silence)


class Speakers:
    """The speech activity of every conference of one bridge."""

    def __init__(self, config: SpeechActivityConfig | None = None) -> None:
        self.config = config or SpeechActivityConfig()
        self._conferences: dict[str, ConferenceSpeakers] = {}

    def conference(self, conference_id: str) -> ConferenceSpeakers:
        state = self._conferences.get(conference_id)
        if state is None:
            state = self._conferences[conference_id] = ConferenceSpeakers(self.config)
        return state

    def get(self, conference_id: str) -> ConferenceSpeakers | None:
        return self._conferences.get(conference_id)

    def forget(self, conference_id: str) -> None:
        self._conferences.pop(conference_id, None)
