"""End-to-end encryption in headless Chromium on the real `sluice serve` (issue 16; signaling/webclient/js/
e2ee*.js, docs/security.md "End-to-end encryption"). Screenshots: test-artifacts/web-extras-e2ee-*.png.

- Two pages with the same passphrase decode each other; a third without it shows the "encrypted"
  placeholder over their tiles and decodes nothing more of them (its worker drops what it cannot decrypt);
  with another passphrase it says so. Microphones are encrypted too. When the third leaves, the two move to
  the next key generation and keep decoding each other; a screen share is encrypted and decrypted; turning
  encryption off sends in clear again (and the other's frames become unreadable).
- What the bridge forwards carries no plaintext. The bridge has no packet capture and its SRTP keys stay in
  it, so the test looks at the bridge's output where it is first readable: the encoded frames as the third
  page's receiver gets them (SRTP removed, RTP depacketized, before any decryption), which are the RTP
  payloads the bridge forwarded without the VP8 payload descriptor. The sender's worker records the
  plaintext frames it encrypts. Compared: 16 bytes after the clear prefix (10 bytes of a VP8 keyframe,
  3 of a delta frame). In a plain run the receiver's frames are the sender's (the comparison finds them);
  with E2EE none of the frames that reached the third page is one the sender's encoder made, every one
  carries the trailer, and keyframes still show VP8's start code (9d 01 2a) in the clear prefix the
  bridge reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_web_extras import camera_frames, decoding, join, no_console_errors, shot, stalled
from tests.e2e.test_web_red import audio_codecs
from tests.e2e.test_web_simulcast import jingle
from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.serve import ServeProcess, running_serve
from tests.helpers.webpage import await_for, open_pages

pytestmark = pytest.mark.e2e

#: The server offers end-to-end encryption (off by default: its frame transforms cost every call CPU).
E2EE = "[signaling.web]\ne2ee = true\n"


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeProcess]:
    async with running_serve(tmp_path, E2EE) as served:
        yield served


PASSPHRASE = "correct horse battery staple"
AUDIO_TOTALS = ("audioPacketsReceived", "audioBytesReceived", "concealedSamples", "totalSamplesReceived")
KEY_CLEAR, DELTA_CLEAR = 10, 3
MAGIC = "534c45"  # "SLE", the trailer's last bytes (e2ee-frame.js)


def is_keyframe(frame: dict[str, str]) -> bool:
    """A VP8 keyframe: its frame tag's bit 0 is clear."""
    return int(frame["head"][:2], 16) & 1 == 0


def after_prefix(frame: dict[str, str]) -> str:
    """The 16 bytes after the clear prefix, in hex."""
    prefix = KEY_CLEAR if is_keyframe(frame) else DELTA_CLEAR
    return frame["head"][2 * prefix : 2 * prefix + 32]


async def receiver_state(
    browser: ChromiumBrowser, what: str, mid: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    e2ee = await await_for(browser, what, lambda e: check(receiver(e, mid)), "e2ee")
    return dict(e2ee)


def mid_of(sources: list[dict[str, Any]], owner: str, media: str = "video") -> str:
    """The m-line of `owner`'s camera (or microphone) among a page's remote sources."""
    (mid,) = [s["mid"] for s in sources if s["owner"] == owner and s["media"] == media]
    return str(mid)


def receiver(e2ee: dict[str, Any], mid: str) -> dict[str, Any]:
    """What the page's worker says of its receiver on m-line `mid` (state, generation)."""
    return dict(e2ee["worker"]["receivers"].get(mid) or {"state": None, "generation": None})


async def keyframe_recorded(browser: ChromiumBrowser, mid: str) -> None:
    """Waits for a VP8 keyframe in what `browser`'s worker recorded on `mid` (a pin asks for one: the bridge
    switches to the 720p layer at a keyframe)."""

    def seen(e2ee: dict[str, Any]) -> bool:
        return any(map(is_keyframe, e2ee["worker"]["record"]["received"].get(mid, [])))

    await await_for(browser, "a keyframe", seen, "e2ee", 20)


async def pinned_record(
    receiver: ChromiumBrowser, sender: ChromiumBrowser, owner: str
) -> tuple[list[dict[str, str]], set[str]]:
    """`receiver` pins `owner` and waits for its keyframe; returns the frames `receiver` recorded of `owner`'s
    video as the bridge forwarded them, and the 16 bytes after the clear prefix of every frame `sender`'s
    encoder made. The receiver's record is read first: all in it was sent before the sender's is read."""
    mid = mid_of(await receiver.acall("remoteSources"), owner)
    await receiver.acall("clickTile", owner)
    await keyframe_recorded(receiver, mid)
    got: list[dict[str, str]] = (await receiver.acall("e2ee"))["worker"]["record"]["received"][mid]
    sent = (await sender.acall("e2ee"))["worker"]["record"]["sent"]
    return got, {after_prefix(f) for f in sent}


async def test_plain_run_shows_the_comparison_finds_plaintext(serve: ServeProcess, tmp_path: Path) -> None:
    async with open_pages(tmp_path) as p:
        p["Ada"], ada = await join(serve, tmp_path, "plain-room", "Ada")
        p["Grace"], _ = await join(serve, tmp_path, "plain-room", "Grace")
        for name in p:
            assert await p[name].acall("e2eeRecord", True) is True
        await await_for(p["Grace"], "Ada decoded", lambda s: camera_frames(s, ada) > 60, "getStats", 40)
        got, plain = await pinned_record(p["Grace"], p["Ada"], ada)
        assert len(got) > 30
        assert not any(f["tail"] == MAGIC for f in got)
        found = sum(after_prefix(f) in plain for f in got[-100:])
        print("plain run: of the last", len(got[-100:]), "frames received,", found, "are the sender's")
        # All of them but any older than the sender's record (it keeps 2,000 frames of three layers).
        assert found >= 0.95 * len(got[-100:])
        keyframes = [f for f in got if is_keyframe(f)]
        assert keyframes and all(f["head"][6:12] == "9d012a" for f in keyframes)


async def test_e2ee_same_passphrase_decodes_others_see_placeholder_bridge_sees_no_plaintext(
    serve: ServeProcess, tmp_path: Path, artifact_dir: Path
) -> None:
    async with open_pages(tmp_path) as p:
        nick: dict[str, str] = {}
        for name in ("Ada", "Grace", "Linus"):
            p[name], nick[name] = await join(serve, tmp_path, "secret-room", name)
        ada, grace = nick["Ada"], nick["Grace"]
        await await_for(p["Linus"], "Ada decoded", lambda s: camera_frames(s, ada) > 30, "getStats", 40)
        for name in ("Ada", "Linus"):
            assert await p[name].acall("e2eeRecord", True) is True

        # Ada and Grace turn encryption on with the same passphrase, through the dialog.
        assert "too long" in await p["Ada"].acall("setE2ee", "x" * 300)
        for name in ("Ada", "Grace"):
            assert await p[name].acall("setE2ee", PASSPHRASE) == ""
        for me, other in (("Ada", grace), ("Grace", ada)):
            mid = mid_of(await p[me].acall("remoteSources"), other)
            await receiver_state(p[me], f"{me} decrypts", mid, lambda r: r["state"] == "decrypted")
            await decoding(p[me], other, 30)
            shown = await p[me].acall("e2ee")
            assert shown["enabled"] and shown["placeholders"][other] is None
            # The microphone too.
            assert (
                receiver(shown, mid_of(await p[me].acall("remoteSources"), other, "audio"))["state"]
                == "decrypted"
            )
            assert shown["worker"]["counters"]["encrypted"] > 0 and shown["worker"]["counters"]["failed"] == 0

        # Linus has no passphrase: placeholders over both, nothing more of theirs decoded, audio dropped too.
        linus = await await_for(
            p["Linus"], "placeholders",
            lambda e: all(e["placeholders"].get(n) for n in (ada, grace)), "e2ee",
        )  # fmt: skip
        assert "end-to-end encrypted" in linus["placeholders"][ada]
        assert not linus["enabled"]
        await stalled(p["Linus"], ada, 3)
        linus = await p["Linus"].acall("e2ee")
        assert linus["worker"]["counters"]["noKey"] > 100 and linus["worker"]["counters"]["decrypted"] == 0
        for owner in (ada, grace):
            for media in ("audio", "video"):
                assert (
                    receiver(linus, mid_of(await p["Linus"].acall("remoteSources"), owner, media))["state"]
                    == "no-key"
                )
        await shot(p["Linus"], artifact_dir, "e2ee-placeholder")
        await shot(p["Grace"], artifact_dir, "e2ee-decrypted")

        # What the bridge forwarded to Linus: encrypted frames, none of Ada's plaintext frames in them; a
        # keyframe among them (Linus pins Ada), its VP8 header in clear.
        got, plain = await pinned_record(p["Linus"], p["Ada"], ada)
        encrypted = [f for f in got if f["tail"] == MAGIC]
        clear_before = [f for f in got if f["tail"] != MAGIC]
        print(
            "E2EE run:", len(encrypted), "encrypted frames reached Linus,", len(clear_before), "clear before"
        )
        assert len(encrypted) > 60
        # Once encrypted, always: the clear ones all came before the first encrypted one.
        first = next(i for i, f in enumerate(got) if f["tail"] == MAGIC)
        assert all(f["tail"] == MAGIC for f in got[first:])
        assert not [f for f in encrypted if after_prefix(f) in plain]
        # The control: the clear frames from before E2EE was on are found the same way (but the first, which
        # may have been encoded before Ada's record began).
        assert all(after_prefix(f) in plain for f in clear_before[1:])
        keyframes = [f for f in encrypted if is_keyframe(f)]
        assert keyframes and all(f["head"][6:12] == "9d012a" for f in keyframes)

        # Another passphrase: "encrypted with another passphrase", still nothing decoded.
        assert await p["Linus"].acall("setE2ee", "not the passphrase") == ""
        linus = await await_for(
            p["Linus"],
            "wrong key",
            lambda e: "another passphrase" in (e["placeholders"].get(ada) or ""),
            "e2ee",
        )
        assert linus["worker"]["counters"]["decrypted"] == 0 and linus["worker"]["counters"]["failed"] > 0
        await stalled(p["Linus"], ada)

        # Linus leaves: Ada and Grace move to generation 1 and keep decoding each other, without a failure
        # (those counted so far were Linus's frames, under his passphrase).
        await p["Linus"].acall("leave")
        for me, other in (("Ada", grace), ("Grace", ada)):
            mid = mid_of(await p[me].acall("remoteSources"), other)
            await await_for(p[me], f"{me} rotated", lambda s: s["counters"]["e2eeRotations"] == 1)
            failed = (await p[me].acall("e2ee"))["worker"]["counters"]["failed"]
            await receiver_state(p[me], f"{me} decrypts generation 1", mid, lambda r: r["generation"] == 1)
            assert (await p[me].acall("e2ee"))["worker"]["generation"] == 1
            await decoding(p[me], other, 30)
            assert (await p[me].acall("e2ee"))["worker"]["counters"]["failed"] == failed
        # A screen share is encrypted too (its sender is made with the transform): Grace decrypts it.
        await p["Ada"].acall("shareScreen")
        screen = f"{ada}-v1"
        await await_for(
            p["Grace"],
            "screen decoded",
            lambda s: s.get(screen, {}).get("framesDecoded", 0) > 5,
            "getStats",
            40,
        )
        mid = next(s["mid"] for s in await p["Grace"].acall("remoteSources") if s["name"] == screen)
        grace_e2ee = await p["Grace"].acall("e2ee")
        assert grace_e2ee["worker"]["receivers"][mid]["state"] == "decrypted"
        assert grace_e2ee["placeholders"][screen] is None

        # Grace turns encryption off: her frames go in clear (Ada decodes them, her receiver says "clear"),
        # and Ada's she can no longer read.
        assert await p["Grace"].acall("setE2ee", "") == ""
        mid = mid_of(await p["Ada"].acall("remoteSources"), grace)
        await receiver_state(p["Ada"], "Grace in clear", mid, lambda r: r["state"] == "clear")
        await decoding(p["Ada"], grace)
        grace_e2ee = await await_for(
            p["Grace"], "Ada unreadable", lambda e: bool(e["placeholders"].get(ada)), "e2ee"
        )
        assert not grace_e2ee["enabled"]
        await stalled(p["Grace"], ada)
        p["Ada"].driver.execute_script("document.getElementById('toggle-e2ee').click()")
        await shot(p["Ada"], artifact_dir, "e2ee-dialog")
        for name in ("Ada", "Grace"):
            no_console_errors(p[name])


@pytest.fixture
async def red_serve(tmp_path: Path) -> AsyncIterator[ServeProcess]:
    async with running_serve(tmp_path, E2EE + "[signaling.focus]\nenable-opus-red = true\n") as served:
        yield served


async def test_e2ee_with_redundant_opus(red_serve: ServeProcess, tmp_path: Path) -> None:
    """RED (RFC 2198): each block is encrypted apart and the headers stay clear, so the bridge still strips
    RED to the primary for a receiver without it; both kinds of receiver decrypt and hear the sender."""
    async with open_pages(tmp_path) as p:
        nick: dict[str, str] = {}
        # Ada sends RED (the server's config.json asks for it), Grace takes it, Linus opts out.
        for name, query in (("Ada", ""), ("Grace", "?red=1"), ("Linus", "?red=0")):
            p[name], nick[name] = await join(red_serve, tmp_path, f"red-room{query}", name)
        ada = nick["Ada"]
        assert audio_codecs(await jingle(p["Ada"], "out", "session-accept"))[0] == "red"
        assert "red" not in audio_codecs(await jingle(p["Linus"], "out", "session-accept"))
        for name in p:
            assert await p[name].acall("setE2ee", PASSPHRASE) == ""
        await p["Ada"].acall("tone", True)
        heard: dict[str, dict[str, Any]] = {}
        for name in ("Grace", "Linus"):
            mid = mid_of(await p[name].acall("remoteSources"), ada, "audio")
            await receiver_state(
                p[name], f"{name} decrypts Ada's audio", mid, lambda r: r["state"] == "decrypted"
            )
            # From here on (what came before the passphrases were all set was dropped, and concealed).
            start = (await p[name].acall("getStats"))[ada]

            def hears(s: dict[str, Any], start: dict[str, Any] = start) -> bool:
                return bool(s[ada]["audioPacketsReceived"] > start["audioPacketsReceived"] + 100)

            now = (await await_for(p[name], f"{name} hears Ada", hears, "getStats", 20))[ada]
            heard[name] = {k: now[k] - start[k] for k in AUDIO_TOTALS}
            assert now["audioLevel"] > 0.01, now
            # Decoded, not made up: concealment stays a small part of what was played.
            assert heard[name]["concealedSamples"] < 0.2 * heard[name]["totalSamplesReceived"], heard[name]
            assert receiver(await p[name].acall("e2ee"), mid)["state"] == "decrypted"
        per_packet = {n: s["audioBytesReceived"] / s["audioPacketsReceived"] for n, s in heard.items()}
        print("E2EE with RED: bytes per audio packet", per_packet)
        # Chrome hands the transforms RED itself: Ada's worker encrypted RED packets block by block, Grace's
        # decrypted them so, and Linus's got the primaries the bridge stripped them to, as Opus.
        seen = {n: (await p[n].acall("e2ee"))["worker"]["counters"] for n in p}
        assert seen["Ada"]["redSent"] > 50 and seen["Grace"]["redReceived"] > 50, seen
        assert seen["Linus"]["redReceived"] == 0 and seen["Linus"]["failed"] == 0, seen
        assert per_packet["Grace"] > 1.5 * per_packet["Linus"], per_packet  # Grace's carry redundancy
        counters = (await p["Ada"].acall("e2ee"))["worker"]["counters"]
        assert counters["unsupported"] == 0 and counters["encrypted"] > 0
        metrics = await red_serve.metrics()
        for reason in ("red_malformed", "not_negotiated"):
            assert metrics.get(f'sluice_packets_dropped_total{{reason="{reason}"}}', 0.0) == 0.0, reason
