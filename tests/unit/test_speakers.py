"""Dominant speaker detection (bridge/speakers.py) with a fake clock: ticks of RFC 6464 loudness."""

from __future__ import annotations

from bridge.speakers import (
    SPEECH_LOUDNESS,
    TAKEOVER_TICKS,
    ConferenceSpeakers,
    SpeakerChange,
    SpeechActivityConfig,
)

TICK = 0.2
MEMBERS = ("a", "b", "c", "d")
LOUD = (97, True)  # a level of -30 dBov: speech
QUIET = (20, False)  # -107 dBov: a muted or silent microphone


def run(
    s: ConferenceSpeakers, t0: float, ticks: int, levels: dict[str, tuple[int, bool]]
) -> list[SpeakerChange]:
    changes = []
    for i in range(ticks):
        c = s.update(t0 + i * TICK, levels, MEMBERS)
        if c is not None:
            changes.append(c)
    return changes


def test_a_steady_speaker_becomes_dominant_within_a_second() -> None:
    s = ConferenceSpeakers()
    changes = run(s, 0.0, 5, {"a": LOUD, "b": QUIET})
    assert changes == [SpeakerChange("a", (), False)]
    assert s.order(MEMBERS) == ["a", "b", "c", "d"]


def test_a_cough_does_not_take_the_stage_but_a_new_speaker_does_and_the_old_one_is_previous() -> None:
    s = ConferenceSpeakers()
    run(s, 0.0, 5, {"a": LOUD})
    # b is loud for one tick while a goes on: no change.
    assert run(s, 1.0, 1, {"a": LOUD, "b": (110, True)}) == []
    assert s.dominant == "a"
    # a stops and b talks: b takes over within TAKEOVER_TICKS + a few ticks of averaging.
    changes = run(s, 1.2, 6, {"b": LOUD})
    assert changes == [SpeakerChange("b", ("a",), False)]
    assert s.order(MEMBERS) == ["b", "a", "c", "d"]


def test_two_talking_over_each_other_do_not_flap() -> None:
    s = ConferenceSpeakers()
    run(s, 0.0, 5, {"a": LOUD})
    # b exactly as loud as a, for a long time: a stays (b is not louder by the margin).
    assert run(s, 1.0, 30, {"a": LOUD, "b": LOUD}) == []
    assert s.dominant == "a"


def test_a_quiet_room_never_names_a_speaker_and_silence_is_reported_only_when_enabled() -> None:
    s = ConferenceSpeakers()
    assert run(s, 0.0, 20, {m: QUIET for m in MEMBERS}) == []
    assert s.dominant is None
    assert QUIET[0] < SPEECH_LOUDNESS

    on = ConferenceSpeakers(
        SpeechActivityConfig(enable_silence_detection=True, silence_detection_timeout=1.0)
    )
    run(on, 0.0, 5, {"a": LOUD})
    changes = run(on, 1.0, 10, {})
    assert changes == [SpeakerChange("a", (), True)]
    # Speech again ends the silence.
    assert run(on, 3.0, TAKEOVER_TICKS + 2, {"a": LOUD})[0] == SpeakerChange("a", (), False)


def test_recent_speakers_are_bounded_and_leavers_are_forgotten() -> None:
    s = ConferenceSpeakers(SpeechActivityConfig(recent_speakers_count=2))
    t = 0.0
    for who in ("a", "b", "c"):
        run(s, t, 8, {who: LOUD})
        t += 2
    assert list(s.recent) == ["c", "b"]
    # c leaves: nobody is dominant until someone speaks, and c is in no list.
    assert s.update(t, {}, ("a", "b", "d")) is None
    assert s.dominant is None and "c" not in s.recent
    assert s.order(("a", "b", "d")) == ["b", "a", "d"]
    view = s.view()
    assert view["dominantSpeaker"] is None and set(view["endpoints"]) == {"a", "b", "d"}
