"""The call extras' pure modules alone in a page (js/chat.js, hands.js, quality.js, devices.js, layout.js,
screenshare.js, e2ee-frame.js, e2ee.js, e2ee-ui.js): parsing what other pages send, bounds, ordering, the
quality levels, the layout's screen-share rule and grid pages, the E2EE frame format and key schedule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.webpage import WebServer

pytestmark = pytest.mark.e2e

ROOM = "r@conference.meet.test"
E2EE = "jitsi_participant_e2ee.enabled"

_RUN = """
const done = arguments[arguments.length - 1];
const [name, input] = [arguments[0], arguments[1]];
const modules = ['chat', 'hands', 'quality', 'devices', 'layout', 'screenshare',
  'e2ee-frame', 'e2ee', 'e2ee-ui'];
Promise.all(modules.map((m) => import(`/js/${m}.js`)))
  .then(([chat, hands, quality, devices, layout, screenshare, frame, e2ee, e2eeUi]) => {
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
        const ids = ['me', 'a', 'b', 'c', 'd'];
        return { steps,
          pinned: layout.stageParticipant({ mode: 'stage', pinned: 'a', dominant: null }, people),
          constraints: layout.receiverConstraints('a-v1', layout.SCREEN_STAGE_HEIGHT),
          hidden: layout.receiverConstraints('a-v0', layout.STAGE_HEIGHT, ['c-v0', 'a-v0', 'b-v0']),
          perPage: [[1248, 640], [900, 250], [300, 100], [0, 0], [664, 384]]
            .map(([w, h]) => layout.tilesPerPage(w, h)),
          pages: [[2, 0], [2, 2], [2, 9], [2, -1], [9, 0]]
            .map(([per, page]) => layout.gridPage(ids, per, page)),
          columns: [[1, 2000], [3, 2000], [5, 2000], [16, 2000], [5, 500], [5, 0]]
            .map(([n, w]) => layout.gridColumns(n, w)),
        };
      },
      e2ee: async () => {
        const room = input.room;
        const data = Uint8Array.from([0x90, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00,
          ...Array.from({ length: 90 }, (_, i) => i)]);
        const material = await frame.deriveMaterial('correct horse', room);
        const [k0, k1] = await Promise.all([0, 1].map((g) => frame.frameKey(material, room, g)));
        const other = await frame.deriveMaterial('correct horse', 'other@conference.meet.test');
        const elsewhere = await frame.frameKey(other, room, 0);
        const wrong = await frame.frameKey(await frame.deriveMaterial('correct horsf', room), room, 0);
        const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
        const opens = async (key, bytes) => {
          try {
            return hex(await frame.decryptFrame(key, frame.parseFrame(bytes, 10))) === hex(data);
          } catch (e) {
            return e.name;
          }
        };
        const enc = await frame.encryptFrame(k0, 0, data, 10);
        const again = await frame.encryptFrame(k0, 0, data, 10);
        const later = await frame.encryptFrame(k1, 257, data, 10);
        const tampered = (i) => { const c = enc.slice(); c[i] ^= 1; return c; };
        const refused = async (p) => {
          try { await frame.deriveMaterial(p, room); return null; } catch (e) { return e.message; }
        };
        const xml = (s) => new DOMParser().parseFromString(s, 'text/xml').documentElement;
        return {
          length: [data.length, enc.length],
          clear: hex(enc.subarray(0, 10)) === hex(data.subarray(0, 10)),
          after: [hex(enc.subarray(10, 26)), hex(data.subarray(10, 26))],
          fresh: hex(enc) !== hex(again),
          trailer: hex(enc.subarray(enc.length - 4)),
          laterIndex: frame.parseFrame(later, 10).index,
          encrypted: [enc, data, enc.subarray(0, 20)].map(frame.isEncrypted),
          opens: {
            right: await opens(k0, enc), nextGeneration: await opens(k1, later),
            generationMismatch: await opens(k1, enc),
            otherRoom: await opens(elsewhere, enc), otherPassphrase: await opens(wrong, enc),
            clearByteChanged: await opens(k0, tampered(5)), bodyByteChanged: await opens(k0, tampered(40)),
            ivChanged: await opens(k0, tampered(enc.length - 10)),
          },
          generations: [[1, 0], [64, 0], [65, 0], [0, 5], [4, 260], [255, 0], [3, 3]]
            .map(([i, last]) => frame.generationOf(i, last)),
          clearBytes: [['audio'], ['video', 'key'], ['video', 'delta']]
            .map(([k, t]) => frame.clearBytes(k, t)),
          refused: [await refused(''), await refused('x'.repeat(frame.MAX_PASSPHRASE + 1)),
            await refused('x'.repeat(frame.MAX_PASSPHRASE))],
          problems: ['', 'ok', 'x'.repeat(300)].map(e2ee.passphraseProblem),
          presence: input.presences.map((s) => e2ee.e2eeOf(xml(s))),
          placeholders: input.people.map((p) => e2eeUi.placeholderText(p, p.weEncrypt)),
          red: (() => {
            const heads = [{ pt: 111, offset: 960 }, { pt: 111, offset: 0 }];
            const built = frame.buildRed(heads, [new Uint8Array(5).fill(1), new Uint8Array(7).fill(2)]);
            const back = frame.parseRed(built);
            const bad = [[], [0x80, 0x0f, 0x00], [0x80, 0x0f, 0x00, 0x09, 0x6f, 1, 2],
              Array(17).fill([0xef, 0, 0, 0]).flat()];
            return {
              built: hex(built), heads: back.heads, blocks: back.blocks.map(hex),
              bad: bad.map((b) => frame.parseRed(Uint8Array.from(b))),
              tooLong: frame.buildRed(heads, [new Uint8Array(1024), new Uint8Array(1)]),
            };
          })(),
        };
      },
      screenshare: () => ({
        source: screenshare.localSourceOf(input.sdp, 'l3'),
        none: screenshare.localSourceOf(input.sdp, 'video'),
      }),
    };
    Promise.resolve(tests[name]()).then(done, (e) => done({ error: String(e) }));
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


def test_grid_pages_and_constraints_of_what_is_not_shown(page: ChromiumBrowser) -> None:
    got = run(page, "layout", {})
    # Hidden sources at 0 (sorted, the stage's own never), the stage at its height.
    assert got["hidden"]["constraints"] == {
        "b-v0": {"maxHeight": 0},
        "c-v0": {"maxHeight": 0},
        "a-v0": {"maxHeight": 720},
    }
    # 320x180 tiles and 12 px gaps: 3x3 in a laptop's grid, 2x1, at least one when nothing fits.
    assert got["perPage"] == [9, 2, 1, 1, 4]
    assert got["pages"] == [
        {"page": 0, "pages": 3, "visible": ["me", "a"]},
        {"page": 2, "pages": 3, "visible": ["d"]},
        {"page": 2, "pages": 3, "visible": ["d"]},  # past the end: the last page
        {"page": 0, "pages": 3, "visible": ["me", "a"]},
        {"page": 0, "pages": 1, "visible": ["me", "a", "b", "c", "d"]},
    ]
    assert got["columns"] == [1, 2, 3, 4, 1, 1]


def test_e2ee_frames_keys_and_generations(page: ChromiumBrowser) -> None:
    presences = [
        f"<presence xmlns='jabber:client'><{E2EE}>true</{E2EE}></presence>",
        f"<presence xmlns='jabber:client'><{E2EE}>false</{E2EE}></presence>",
        "<presence xmlns='jabber:client'/>",
    ]
    people = [
        {"id": "a", "name": "Ada", "e2ee": True, "e2eeState": None, "weEncrypt": False},
        {"id": "a", "name": "Ada", "e2ee": True, "e2eeState": "decrypted", "weEncrypt": True},
        {"id": "a", "name": "Ada", "e2ee": False, "e2eeState": "wrong-key", "weEncrypt": True},
        {"id": "a", "name": "Ada", "e2ee": False, "e2eeState": "no-key", "weEncrypt": False},
        {"id": "a", "name": "Ada", "e2ee": False, "e2eeState": "clear", "weEncrypt": False},
        {"id": "me", "name": "Me", "local": True, "e2ee": True, "e2eeState": None, "weEncrypt": False},
    ]
    got = run(page, "e2ee", {"room": ROOM, "presences": presences, "people": people})
    # Clear prefix + ciphertext + 16-byte tag + IV, key index and "SLE".
    assert got["length"] == [100, 100 + 16 + 16]
    assert got["clear"] and got["after"][0] != got["after"][1] and got["fresh"]
    assert got["trailer"] == "00534c45" and got["laterIndex"] == 1  # generation 257: index 1
    assert got["encrypted"] == [True, False, False]
    assert got["opens"] == {
        "right": True, "nextGeneration": True, "generationMismatch": "OperationError",
        "otherRoom": "OperationError", "otherPassphrase": "OperationError",
        "clearByteChanged": "OperationError", "bodyByteChanged": "OperationError",
        "ivChanged": "OperationError",
    }  # fmt: skip
    # Up to 64 generations ahead; else behind; never below 0.
    assert got["generations"] == [1, 64, None, 0, 260, None, 3]
    assert got["clearBytes"] == [1, 10, 3]
    too_long = "the passphrase must have 1 to 256 characters"
    assert got["refused"] == [too_long, too_long, None]
    assert got["problems"][0] == "Please enter a passphrase." and got["problems"][1] == ""
    assert "too long: 300 characters, the limit is 256" in got["problems"][2]
    assert got["presence"] == [True, False, False]
    first, decrypted, wrong, no_key, clear, me = got["placeholders"]
    assert "Ada is end-to-end encrypted" in first and decrypted is None and clear is None and me is None
    assert wrong == "Ada is encrypted with another passphrase."
    assert "Ada is end-to-end encrypted" in no_key
    # RED: F=1 | PT 111, offset 960 (14 bits), length 5 (10 bits); then F=0 | PT 111; the blocks.
    red = got["red"]
    assert red["built"] == "ef0f0005" + "6f" + "01" * 5 + "02" * 7
    assert red["heads"] == [{"pt": 111, "offset": 960}, {"pt": 111, "offset": 0}]
    assert red["blocks"] == ["01" * 5, "02" * 7]
    # Empty, a header cut short, a length past the payload, more than 16 headers; a block too long to say.
    assert red["bad"] == [None, None, None, None] and red["tooLong"] is None


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
