"""The call extras' pure modules alone in a page (js/chat.js, hands.js, quality.js, devices.js, layout.js,
screenshare.js): parsing what other pages send, bounds, ordering, the quality levels and the layout's
screen-share rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.webpage import WebServer

pytestmark = pytest.mark.e2e

ROOM = "r@conference.meet.test"

_RUN = """
const done = arguments[arguments.length - 1];
const [name, input] = [arguments[0], arguments[1]];
const modules = ['chat', 'hands', 'quality', 'devices', 'layout', 'screenshare'];
Promise.all(modules.map((m) => import(`/js/${m}.js`)))
  .then(([chat, hands, quality, devices, layout, screenshare]) => {
    const xml = (s) => new DOMParser().parseFromString(s, 'text/xml').documentElement;
    const tests = {
      chat: () => {
        const parse = (s) => {
          try {
            return chat.parseChatMessage(xml(s), input.room);
          } catch (e) {
            return { error: e.constructor.name, message: e.message };
          }
        };
        const validate = (t) => {
          try { return chat.validateMessage(t); } catch (e) { return { error: e.message }; }
        };
        const log = new chat.ChatLog(3);
        for (let i = 0; i < 5; i += 1) log.add({ text: String(i), mine: i === 4 }, i === 0);
        return {
          parsed: input.stanzas.map(parse),
          validated: [validate(''), validate('  hi  '), validate('x'.repeat(chat.MAX_CHAT_CHARS)),
                      validate('x'.repeat(chat.MAX_CHAT_CHARS + 1))],
          links: input.texts.map(chat.linkify),
          log: { kept: log.messages.map((m) => m.text), unread: log.unread },
        };
      },
      hands: () => ({
        raised: input.presences.map((s) => hands.raisedHandOf(xml(s), 1234567890123)),
        queue: hands.handQueue(input.people),
      }),
      quality: () => ({
        levels: input.levels.map((x) => quality.qualityLevel(x)),
        interval: quality.interval(input.prev, input.cur, 2000),
        reset: quality.interval(input.cur, input.prev, 2000),
        reported: input.reports.map(quality.parseEndpointStats),
      }),
      devices: () => {
        const store = new Map();
        const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
        const empty = devices.loadPrefs(storage);
        devices.savePrefs({ camera: 'cam2', microphone: null, speaker: 'spk' }, storage);
        const saved = devices.loadPrefs(storage);
        store.set(devices.DEVICES_KEY, '{"camera": 5, "speaker": "' + 'x'.repeat(300) + '"}');
        const bad = devices.loadPrefs(storage);
        store.set(devices.DEVICES_KEY, 'not json');
        return { empty, saved, bad, broken: devices.loadPrefs(storage),
          constraints: devices.mediaConstraints(saved), grouped: devices.groupDevices(input.devices) };
      },
      layout: () => {
        const people = [{ id: 'me', local: true }, { id: 'a' }, { id: 'a-v1', screen: true, owner: 'a' }];
        const l = { mode: 'grid', pinned: null, auto: false, chosen: false };
        const steps = [];
        steps.push([layout.followScreens(l, people), l.mode, layout.stageParticipant(l, people)]);
        steps.push([layout.followScreens(l, people.slice(0, 2)), l.mode]);
        const chosen = { mode: 'grid', pinned: null, auto: false, chosen: true };
        steps.push([layout.followScreens(chosen, people), chosen.mode]);
        const own = { mode: 'grid', pinned: null, auto: false, chosen: false };
        const mine = [{ id: 'me', local: true }, { id: 'me-v1', local: true, screen: true }];
        steps.push([layout.followScreens(own, mine), own.mode]);
        return { steps,
          pinned: layout.stageParticipant({ mode: 'stage', pinned: 'a', dominant: null }, people),
          constraints: layout.receiverConstraints('a-v1', layout.SCREEN_STAGE_HEIGHT) };
      },
      screenshare: () => ({
        source: screenshare.localSourceOf(input.sdp, 'l3'),
        none: screenshare.localSourceOf(input.sdp, 'video'),
      }),
    };
    done(tests[name]());
  }, (e) => done({ error: String(e) }));
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromiumBrowser]:
    tmp: Path = tmp_path_factory.mktemp("modules")
    with WebServer() as server:
        browser = ChromiumBrowser.start(tmp / "profile", server.url + "/")
        try:
            yield browser
        finally:
            browser.stop()


def run(page: ChromiumBrowser, name: str, data: dict[str, Any]) -> Any:
    got = page.driver.execute_async_script(_RUN, name, data)
    assert isinstance(got, dict) and "error" not in got, got
    return got


def test_chat_parsing_limits_links_and_unread(page: ChromiumBrowser) -> None:
    stanzas = [
        f"<message xmlns='jabber:client' type='groupchat' from='{ROOM}/ab12'><body>hi &lt;b&gt;</body>"
        "<nick xmlns='http://jabber.org/protocol/nick'>Ada</nick></message>",
        f"<message xmlns='jabber:client' type='chat' from='{ROOM}/cd34'><body>psst</body>"
        "<x xmlns='http://jabber.org/protocol/muc#user'/></message>",
        f"<message xmlns='jabber:client' type='groupchat' from='{ROOM}/ab12'><body>old</body>"
        "<delay xmlns='urn:xmpp:delay' stamp='2026-01-02T03:04:05Z'/></message>",
        f"<message xmlns='jabber:client' type='groupchat' from='{ROOM}'><body>from the room</body></message>",
        "<message xmlns='jabber:client' type='groupchat' from='other@conference.meet.test/ab12'>"
        "<body>x</body></message>",
        f"<message xmlns='jabber:client' type='normal' from='{ROOM}/ab12'><body>x</body></message>",
        f"<message xmlns='jabber:client' type='groupchat' from='{ROOM}/ab12'><subject>s</subject></message>",
        f"<message xmlns='jabber:client' type='groupchat' from='{ROOM}/ab12'>"
        f"<body>{'y' * 16001}</body></message>",
    ]
    texts = [
        "see https://example.test/a?b=1, ok",
        "javascript:alert(1) and http://x.test/<script>",
        "no links here",
    ]
    got = run(page, "chat", {"room": ROOM, "stanzas": stanzas, "texts": texts})
    first, private, delayed, *rest = got["parsed"]
    assert {k: first[k] for k in ("from", "name", "text", "private", "delayed")} == {
        "from": "ab12", "name": "Ada", "text": "hi <b>", "private": False, "delayed": False,
    }  # fmt: skip
    assert private["private"] is True and private["name"] is None
    assert delayed["delayed"] is True and delayed["time"] == 1767323045000
    assert rest[:4] == [None, None, None, None]
    assert rest[4]["error"] == "ChatError" and "16001" in rest[4]["message"]
    empty, trimmed, at_limit, over = got["validated"]
    assert "Type a message" in empty["error"] and trimmed == "hi" and len(at_limit) == 4000
    assert "4001 characters" in over["error"] and "4000" in over["error"]
    assert got["links"][0] == [
        {"text": "see "},
        {"text": "https://example.test/a?b=1", "href": "https://example.test/a?b=1"},
        {"text": ", ok"},
    ]  # fmt: skip
    assert got["links"][1] == [
        {"text": "javascript:alert(1) and "},
        {"text": "http://x.test/", "href": "http://x.test/"},
        {"text": "<script>"},
    ]  # fmt: skip
    assert got["links"][2] == [{"text": "no links here"}]
    # 5 added, 3 kept; unread: not the one seen (0), not our own (4).
    assert got["log"] == {"kept": ["2", "3", "4"], "unread": 3}


def test_raised_hands_from_presence_and_their_order(page: ChromiumBrowser) -> None:
    def pres(body: str) -> str:
        return f"<presence xmlns='jabber:client'>{body}</presence>"

    presences = [
        pres("<jitsi_participant_raisedHand>1767323045000</jitsi_participant_raisedHand>"),
        pres(""),
        pres("<jitsi_participant_raisedHand/>"),
        pres("<jitsi_participant_raisedHand>false</jitsi_participant_raisedHand>"),
        pres("<jitsi_participant_raisedHand>true</jitsi_participant_raisedHand>"),  # no time: now
        pres("<jitsi_participant_raisedHand>99999999999999999</jitsi_participant_raisedHand>"),
    ]
    people = [
        {"id": "c", "raisedHand": 30},
        {"id": "a", "raisedHand": None},
        {"id": "d", "raisedHand": 10},
        {"id": "b", "raisedHand": 30},
        {"id": "e"},
    ]
    got = run(page, "hands", {"presences": presences, "people": people})
    assert got["raised"] == [1767323045000, None, None, None, 1234567890123, 1234567890123]
    assert got["queue"] == ["d", "b", "c"]


def test_quality_levels_intervals_and_reports(page: ChromiumBrowser) -> None:
    levels = [
        {},
        {"lossPct": 0, "rttMs": 20, "fps": 30, "expectVideo": True},
        {"lossPct": 3, "rttMs": 20},
        {"lossPct": 0, "rttMs": 300},
        {"lossPct": 12, "rttMs": 20},
        {"lossPct": 0, "rttMs": 20, "fps": 2, "expectVideo": True},
        {"lossPct": 0, "rttMs": 20, "fps": 2, "expectVideo": False},
    ]
    prev = {"videoBytesReceived": 100_000, "audioBytesReceived": 10_000, "videoPacketsReceived": 900,
            "videoPacketsLost": 0, "framesDecoded": 100, "frameWidth": 320, "frameHeight": 180}  # fmt: skip
    cur = {"videoBytesReceived": 350_000, "audioBytesReceived": 20_000, "videoPacketsReceived": 1090,
           "videoPacketsLost": 10, "framesDecoded": 160, "frameWidth": 640, "frameHeight": 360}  # fmt: skip
    reports = [
        {"from": "ab12", "bitrate": {"upload": 900, "download": 1200}, "packetLoss": {"upload": 1.5},
         "connectionQuality": 100, "jvbRTT": 12},
        {"from": "ab12", "bitrate": {"upload": -5}, "packetLoss": {"upload": 400}, "jvbRTT": "fast"},
        {"bitrate": {"upload": 1}},
        {"from": "x" * 65},
    ]  # fmt: skip
    got = run(page, "quality", {"levels": levels, "prev": prev, "cur": cur, "reports": reports})
    assert got["levels"] == ["unknown", "good", "fair", "fair", "poor", "poor", "good"]
    # 260 kB in 2 s = 1040 kbit/s; 10 of 200 packets lost = 5 %; 60 frames in 2 s = 30 fps.
    assert got["interval"] == {"bitrateKbps": 1040, "lossPct": 5, "fps": 30, "width": 640, "height": 360}
    assert got["reset"]["bitrateKbps"] is None and got["reset"]["lossPct"] is None
    assert got["reported"][0] == {
        "from": "ab12", "uploadKbps": 900, "downloadKbps": 1200, "uploadLossPct": 1.5,
        "connectionQuality": 100, "rttMs": 12,
    }  # fmt: skip
    assert got["reported"][1] == {
        "from": "ab12", "uploadKbps": None, "downloadKbps": None, "uploadLossPct": None,
        "connectionQuality": None, "rttMs": None,
    }  # fmt: skip
    assert got["reported"][2:] == [None, None]


def test_device_choices_are_remembered_and_bounded(page: ChromiumBrowser) -> None:
    devices = [
        {"kind": "videoinput", "deviceId": "cam1", "label": "Front"},
        {"kind": "videoinput", "deviceId": "cam2", "label": ""},
        {"kind": "videoinput", "deviceId": "cam2", "label": "again"},
        {"kind": "audioinput", "deviceId": "mic", "label": "Mic"},
        {"kind": "audiooutput", "deviceId": "default", "label": "Speakers"},
        {"kind": "other", "deviceId": "x", "label": "?"},
    ]
    got = run(page, "devices", {"devices": devices})
    none = {"camera": None, "microphone": None, "speaker": None}
    assert got["empty"] == none and got["broken"] == none and got["bad"] == none
    assert got["saved"] == {"camera": "cam2", "microphone": None, "speaker": "spk"}
    assert got["constraints"] == {
        "audio": True,
        "video": {"width": {"ideal": 1280}, "height": {"ideal": 720}, "deviceId": {"exact": "cam2"}},
    }
    assert got["grouped"] == {
        "cameras": [{"deviceId": "cam1", "label": "Front"}, {"deviceId": "cam2", "label": "camera 2"}],
        "microphones": [{"deviceId": "mic", "label": "Mic"}],
        "speakers": [{"deviceId": "default", "label": "Speakers"}],
    }


def test_a_screen_share_takes_the_stage_and_gives_it_back(page: ChromiumBrowser) -> None:
    got = run(page, "layout", {})
    assert got["steps"] == [
        [True, "stage", "a-v1"],  # someone else's screen: on stage
        [True, "grid"],  # it ended: back to the grid
        [False, "grid"],  # the person chose the grid during the share
        [False, "grid"],  # our own screen does not take our stage
    ]
    assert got["pinned"] == "a"  # a pin beats the screen
    assert got["constraints"] == {
        "onStageSources": ["a-v1"],
        "selectedSources": [],
        "defaultConstraints": {"maxHeight": 180},
        "constraints": {"a-v1": {"maxHeight": 1080}},
    }


def test_the_screen_lines_sources_are_read_from_the_answer(page: ChromiumBrowser) -> None:
    sdp = "\r\n".join(
        [
            "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0",
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "a=mid:video", "a=recvonly",
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "a=mid:l3", "a=sendonly", "a=msid:s t",
            "a=ssrc-group:FID 111 222", "a=ssrc:222 cname:c", "a=ssrc:222 msid:s t", "a=ssrc:111 cname:c",
            "a=ssrc:111 msid:s t", "",
        ]
    )  # fmt: skip
    got = run(page, "screenshare", {"sdp": sdp})
    assert got["source"] == {
        "ssrcs": [111, 222],
        "groups": [{"semantics": "FID", "ssrcs": [111, 222]}],
        "msid": "s t",
    }
    assert got["none"] is None
