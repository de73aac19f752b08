"""The incremental stream parser and the serializer: RFC 6120 §11 restrictions, limits, framings, fuzzing."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.xmpp.parser import Event, ParseError, Stanza, StreamClose, StreamOpen, StreamParser
from signaling.xmpp.xmlutil import NS_CLIENT, serialize

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='meet.sluice' version='1.0'>"
)


def parse_all(data: bytes, *, limit: int = 1 << 20) -> list[Event]:
    return StreamParser(max_stanza_bytes=limit).feed(data)


def errors(events: list[Event]) -> list[ParseError]:
    return [e for e in events if isinstance(e, ParseError)]


def stanzas(events: list[Event]) -> list[ET.Element]:
    return [e.element for e in events if isinstance(e, Stanza)]


def test_stream_open_stanzas_and_close_rfc6120_4_2() -> None:
    events = parse_all(
        HEADER + b"<iq type='get' id='a1'><ping xmlns='urn:xmpp:ping'/></iq>\n "
        b"<message to='x@meet.sluice' xml:lang='en'><body>a &amp; b &#x263a;</body></message></stream:stream>"
    )
    assert isinstance(events[0], StreamOpen)
    assert events[0].attrs == {"to": "meet.sluice", "version": "1.0"}
    iq, message = stanzas(events)
    assert iq.tag == f"{{{NS_CLIENT}}}iq"
    assert iq[0].tag == "{urn:xmpp:ping}ping"
    assert message.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert message.findtext(f"{{{NS_CLIENT}}}body") == "a & b \u263a"
    assert isinstance(events[-1], StreamClose)


def test_whitespace_keepalives_are_ignored() -> None:
    parser = StreamParser(max_stanza_bytes=64)
    assert [type(e) for e in parser.feed(HEADER)] == [StreamOpen]
    for _ in range(200):  # far more whitespace than the stanza limit, over time
        assert parser.feed(b" ") == []
    assert len(stanzas(parser.feed(b"<presence/>"))) == 1


def test_doctype_is_restricted_xml_rfc6120_11_1() -> None:
    events = parse_all(b"<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY lol 'lol'>]>" + HEADER[21:])
    assert [(e.condition) for e in errors(events)] == ["restricted-xml"]


def test_entity_declaration_and_billion_laughs_are_restricted() -> None:
    bomb = b"<!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>]><x>&b;</x>"
    assert errors(parse_all(bomb))[0].condition == "restricted-xml"


def test_comment_and_processing_instruction_are_restricted() -> None:
    assert errors(parse_all(HEADER + b"<!-- hello -->"))[0].condition == "restricted-xml"
    assert errors(parse_all(HEADER + b"<?php echo 1; ?>"))[0].condition == "restricted-xml"
    assert errors(parse_all(HEADER + b"<message><?pi x?></message>"))[0].condition == "restricted-xml"


def test_undefined_entity_reference_is_not_well_formed() -> None:
    assert errors(parse_all(HEADER + b"<message><body>&nbsp;</body></message>"))[0].condition == (
        "not-well-formed"
    )


def test_malformed_xml_is_not_well_formed_and_parser_stays_dead() -> None:
    parser = StreamParser(max_stanza_bytes=1024)
    events = parser.feed(HEADER + b"<message><body>x</bod></message>")
    assert errors(events)[0].condition == "not-well-formed"
    assert parser.dead
    assert parser.feed(b"<presence/>") == []


def test_wrong_root_element() -> None:
    assert errors(parse_all(b"<html><body/></html>"))[0].condition == "bad-format"
    wrong_ns = b"<stream:stream xmlns:stream='urn:wrong'>"
    assert errors(parse_all(wrong_ns))[0].condition == "invalid-namespace"


def test_text_between_stanzas_is_bad_format() -> None:
    assert errors(parse_all(HEADER + b"hello"))[0].condition == "bad-format"


def test_oversized_stanza_is_policy_violation_even_when_split() -> None:
    parser = StreamParser(max_stanza_bytes=200)
    parser.feed(HEADER)
    assert parser.feed(b"<message><body>" + b"x" * 100) == []
    events = parser.feed(b"x" * 150)
    assert errors(events)[0].condition == "policy-violation"


def test_oversized_unfinished_start_tag_is_caught() -> None:
    """expat buffers an unfinished token without events; the byte count still sees it."""
    parser = StreamParser(max_stanza_bytes=200)
    parser.feed(HEADER)
    events = parser.feed(b"<message a='")
    for _ in range(10):
        events += parser.feed(b"y" * 50)
    assert errors(events)[0].condition == "policy-violation"


def test_stanza_at_the_limit_passes() -> None:
    body = b"<message><body>" + b"z" * 100 + b"</body></message>"
    parser = StreamParser(max_stanza_bytes=len(body))
    events = parser.feed(HEADER + body)
    assert errors(events) == []
    assert len(stanzas(events)) == 1


def test_nesting_depth_limit() -> None:
    deep = b"<message>" + b"<a>" * 10 + b"</a>" * 10 + b"</message>"
    assert errors(StreamParser(max_stanza_bytes=4096, max_depth=5).feed(HEADER + deep))[0].condition == (
        "policy-violation"
    )
    assert errors(StreamParser(max_stanza_bytes=4096, max_depth=20).feed(HEADER + deep)) == []


def test_restart_starts_a_new_document() -> None:
    parser = StreamParser(max_stanza_bytes=4096)
    parser.feed(HEADER + b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>")
    parser.restart()
    events = parser.feed(HEADER + b"<iq type='set' id='b'/>")  # a second XML declaration is fine now
    assert [type(e) for e in events] == [StreamOpen, Stanza]


def test_websocket_frames_rfc7395_3_3() -> None:
    parser = StreamParser(max_stanza_bytes=4096, framed=True)
    (open_event,) = parser.feed_frame(
        '<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="meet.sluice" version="1.0"/>'
    )
    assert isinstance(open_event, StreamOpen) and open_event.attrs["to"] == "meet.sluice"
    (stanza,) = parser.feed_frame('<message xmlns="jabber:client" to="a@b"><body>hi</body></message>')
    assert isinstance(stanza, Stanza)
    assert stanza.element.findtext(f"{{{NS_CLIENT}}}body") == "hi"
    # Lenient: a frame without xmlns is read as jabber:client.
    (bare,) = parser.feed_frame("<presence><show>away</show></presence>")
    assert isinstance(bare, Stanza)
    assert bare.element.find(f"{{{NS_CLIENT}}}show") is not None
    (close,) = parser.feed_frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>')
    assert isinstance(close, StreamClose)


def test_websocket_frame_errors() -> None:
    assert errors(StreamParser(max_stanza_bytes=100, framed=True).feed_frame("<message>"))[0].condition == (
        "not-well-formed"
    )
    big = "<message><body>" + "x" * 200 + "</body></message>"
    assert errors(StreamParser(max_stanza_bytes=100, framed=True).feed_frame(big))[0].condition == (
        "policy-violation"
    )
    dtd = '<!DOCTYPE m [<!ENTITY e "x">]><message xmlns="jabber:client"/>'
    assert errors(StreamParser(max_stanza_bytes=100, framed=True).feed_frame(dtd))[0].condition == (
        "restricted-xml"
    )


def test_serializer_declares_namespaces_without_prefixes() -> None:
    msg = ET.Element(
        f"{{{NS_CLIENT}}}message", {"to": 'a"b', "{http://www.w3.org/XML/1998/namespace}lang": "en"}
    )
    x = ET.SubElement(msg, "{http://jabber.org/protocol/muc#user}x")
    ET.SubElement(x, "{http://jabber.org/protocol/muc#user}item", {"jid": "a@b/c<d>"})
    ET.SubElement(msg, f"{{{NS_CLIENT}}}body").text = "1 < 2 & 3"
    assert serialize(msg) == (
        '<message to="a&quot;b" xml:lang="en"><x xmlns="http://jabber.org/protocol/muc#user">'
        '<item jid="a@b/c&lt;d&gt;"/></x><body>1 &lt; 2 &amp; 3</body></message>'
    )
    assert serialize(msg, None).startswith('<message xmlns="jabber:client" ')
    assert "ns0" not in serialize(msg, None)


# ---- property tests

# Characters XML 1.0 allows: no surrogates, controls or unassigned code points (Cn holds U+FFFE and U+FFFF,
# which expat rightly refuses: drawing one once made this test fail with not-well-formed).
_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn"))
    | st.sampled_from("\n\t<>&'\""),
    max_size=30,
)
_names = st.sampled_from(["a", "b", "body", "x", "item", "source"])


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> ET.Element:
    ns = draw(st.sampled_from([NS_CLIENT, "urn:x", "http://jabber.org/protocol/muc#user"]))
    elem = ET.Element(f"{{{ns}}}{draw(_names)}", draw(st.dictionaries(_names, _text, max_size=3)))
    if draw(st.booleans()):
        elem.text = draw(_text) or None
    if depth < 3:
        for child in draw(st.lists(elements(depth + 1), max_size=3)):
            child.tail = draw(_text) or None
            elem.append(child)
    return elem


@st.composite
def stanza_lists(draw: st.DrawFn) -> list[ET.Element]:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        stanza = ET.Element(f"{{{NS_CLIENT}}}{draw(st.sampled_from(['iq', 'message', 'presence']))}")
        stanza.extend(draw(st.lists(elements(), max_size=3)))
        out.append(stanza)
    return out


@settings(max_examples=150, deadline=None)
@given(stanza_lists(), st.data())
def test_random_chunking_gives_the_same_stanzas(batch: list[ET.Element], data: st.DataObject) -> None:
    wire = HEADER + "".join(serialize(s) for s in batch).encode() + b"</stream:stream>"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    parser = StreamParser(max_stanza_bytes=1 << 20)
    events: list[Event] = []
    last = 0
    for cut in [*cuts, len(wire)]:
        events += parser.feed(wire[last:cut])
        last = cut
    assert errors(events) == []
    assert [serialize(s) for s in stanzas(events)] == [serialize(s) for s in batch]
    assert isinstance(events[-1], StreamClose)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 64), max_size=8))
def test_arbitrary_bytes_never_raise(junk: bytes, chunks: list[int]) -> None:
    """Fuzz: any bytes, fed in any chunks, after a valid header or not, give events and never an exception."""
    for prefix in (b"", HEADER):
        parser = StreamParser(max_stanza_bytes=256)
        data = prefix + junk
        pos = 0
        seen_error = False
        for size in [*chunks, len(data)]:
            for event in parser.feed(data[pos : pos + size]):
                assert not seen_error, "no event may follow an error"
                seen_error = isinstance(event, ParseError)
            pos += size
        framed = StreamParser(max_stanza_bytes=256, framed=True)
        framed.feed_frame(junk)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_junk_inside_a_stanza_never_raises(junk: bytes) -> None:
    parser = StreamParser(max_stanza_bytes=512)
    parser.feed(HEADER + b"<message><body>")
    events = parser.feed(junk) + parser.feed(b"</body></message>")
    assert all(isinstance(e, Stanza | ParseError | StreamClose | StreamOpen) for e in events)


def test_websocket_whitespace_message_is_ignored() -> None:
    parser = StreamParser(max_stanza_bytes=100, framed=True)
    assert parser.feed_frame(" \r\n") == []
    assert not parser.dead
