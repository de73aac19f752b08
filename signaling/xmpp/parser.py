"""Incremental XMPP stream parsing on expat: bytes in, stream events out; never raises on bad input.

RFC 6120 §11.1 restricts the XML of a stream: no comments, processing instructions, DTDs or entity
declarations/references beyond the predefined ones. Each is reported as `restricted-xml`. Anything expat
cannot parse is `not-well-formed`. A stanza larger than the limit, or nested deeper than the limit, is a
`policy-violation`. After an error event the parser is dead and returns nothing more.

Two framings: a TCP stream (one `<stream:stream>` document; stanzas are its depth-1 children) and RFC 7395
WebSocket messages (each message is one complete document: `<open/>`, `<close/>` or one stanza).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import NoReturn
from xml.parsers import expat

from signaling.xmpp.xmlutil import NS_CLIENT, NS_FRAMING, NS_STREAMS

STREAM_TAG = f"{{{NS_STREAMS}}}stream"
OPEN_TAG = f"{{{NS_FRAMING}}}open"
CLOSE_TAG = f"{{{NS_FRAMING}}}close"


@dataclass(frozen=True, slots=True)
class StreamOpen:
    attrs: dict[str, str]


@dataclass(frozen=True, slots=True)
class Stanza:
    element: ET.Element
    size: int


@dataclass(frozen=True, slots=True)
class StreamClose:
    pass


@dataclass(frozen=True, slots=True)
class ParseError:
    """A stream-level error: `condition` is an RFC 6120 §4.9.3 stream error condition."""

    condition: str
    text: str


Event = StreamOpen | Stanza | StreamClose | ParseError


class _Fail(Exception):
    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


def _tag(name: str) -> str:
    # expat with namespace_separator=" " reports "uri local" (or "local" without a namespace).
    uri, sep, local = name.rpartition(" ")
    return f"{{{uri}}}{local}" if sep else name


class _Expat:
    """One expat document with XMPP's restrictions; builds elements below `stanza_depth`."""

    def __init__(self, owner: StreamParser, stanza_depth: int) -> None:
        self.owner = owner
        self.stanza_depth = stanza_depth
        self.depth = 0
        self.stack: list[ET.Element] = []
        self.stanza_start = 0
        #: Stream byte index where the bytes of the next stanza begin counting (for the size limit).
        self.boundary = 0
        #: A WebSocket <open/> or <close/> frame (no stanza is built from it).
        self.frame_root = False
        self.header_opened = False
        p = expat.ParserCreate(encoding="UTF-8", namespace_separator=" ")
        p.buffer_text = True
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._chars
        p.StartDoctypeDeclHandler = self._restricted_doctype
        p.EntityDeclHandler = self._restricted_entity
        p.UnparsedEntityDeclHandler = self._restricted_entity
        p.NotationDeclHandler = self._restricted_notation
        p.ProcessingInstructionHandler = self._restricted_pi
        p.CommentHandler = self._restricted_comment
        p.SkippedEntityHandler = self._restricted_skipped
        self.parser = p

    # RFC 6120 §11.1: each restricted construct is a `restricted-xml` stream error.
    def _restricted(self, what: str) -> NoReturn:
        raise _Fail("restricted-xml", f"{what} are not allowed in XMPP")

    def _restricted_doctype(self, *_args: object) -> None:
        self._restricted("document type declarations")

    def _restricted_entity(self, *_args: object) -> None:
        self._restricted("entity declarations")

    def _restricted_notation(self, *_args: object) -> None:
        self._restricted("notation declarations")

    def _restricted_pi(self, *_args: object) -> None:
        self._restricted("processing instructions")

    def _restricted_comment(self, *_args: object) -> None:
        self._restricted("comments")

    def _restricted_skipped(self, *_args: object) -> None:
        self._restricted("entity references")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        tag = _tag(name)
        attrib = {_tag(k): v for k, v in attrs.items()}
        depth = self.depth
        self.depth += 1
        if self.frame_root:
            return  # children of <open/>/<close/> carry nothing we use
        if depth < self.stanza_depth or (self.owner.framed and depth == 0 and tag in (OPEN_TAG, CLOSE_TAG)):
            self.frame_root = self.owner.framed
            # The header's own bytes do not count; its end is unknown here, so feed() moves the boundary.
            self.header_opened = True
            self.owner._on_root(tag, attrib)
            return
        if self.depth - self.stanza_depth > self.owner.max_depth:
            raise _Fail("policy-violation", f"elements nested deeper than {self.owner.max_depth}")
        if depth == self.stanza_depth:
            self.stanza_start = self.parser.CurrentByteIndex
            elem = ET.Element(tag, attrib)
        else:
            elem = ET.SubElement(self.stack[-1], tag, attrib)
        self.stack.append(elem)
        self._check_size()

    def _end(self, _name: str) -> None:
        self.depth -= 1
        if self.frame_root:
            return
        if self.depth < self.stanza_depth:
            self.owner._on_root_end()
            return
        elem = self.stack.pop()
        if self.depth == self.stanza_depth:
            here = self.parser.CurrentByteIndex
            size = max(here - self.stanza_start, 0)
            self._check_size()
            self.boundary = here
            self.owner._on_stanza(elem, size)

    def _chars(self, data: str) -> None:
        if self.frame_root:
            return
        if self.depth <= self.stanza_depth:
            if data.strip():
                raise _Fail("bad-format", "character data between stanzas")
            # Whitespace keepalives reset the size window.
            self.boundary = self.parser.CurrentByteIndex + len(data.encode())
            return
        elem = self.stack[-1]
        if len(elem):
            last = elem[-1]
            last.tail = (last.tail or "") + data
        else:
            elem.text = (elem.text or "") + data
        self._check_size()

    def _check_size(self) -> None:
        if self.parser.CurrentByteIndex - self.stanza_start > self.owner.max_stanza_bytes:
            raise _Fail("policy-violation", f"stanza larger than {self.owner.max_stanza_bytes} bytes")

    def pending_bytes(self, fed: int) -> int:
        """Bytes of the stanza being read (or of the token expat still buffers)."""
        start = self.stanza_start if self.depth > self.stanza_depth else self.boundary
        return fed - start


class StreamParser:
    """Incremental parser for one direction of one c2s connection."""

    def __init__(self, *, max_stanza_bytes: int, max_depth: int = 64, framed: bool = False) -> None:
        self.max_stanza_bytes = max_stanza_bytes
        self.max_depth = max_depth
        self.framed = framed
        self.dead = False
        self._events: list[Event] = []
        self._doc: _Expat | None = None
        self._fed = 0
        self.restart()

    def restart(self) -> None:
        """A fresh XML document (RFC 6120 §4.3.3: after STARTTLS and SASL success the stream restarts)."""
        if not self.framed:
            self._doc = _Expat(self, stanza_depth=1)
            self._fed = 0

    # ---- TCP

    def feed(self, data: bytes) -> list[Event]:
        """Parses more stream bytes; returns the events completed by them."""
        if self.dead or self.framed or not data:
            return []
        doc = self._doc
        assert doc is not None, "restart() creates the document of a TCP stream"
        self._fed += len(data)
        try:
            doc.parser.Parse(data, False)
            if doc.header_opened:
                doc.header_opened = False
                if doc.depth == doc.stanza_depth:
                    doc.boundary = self._fed
            if doc.pending_bytes(self._fed) > self.max_stanza_bytes:
                raise _Fail("policy-violation", f"stanza larger than {self.max_stanza_bytes} bytes")
        except _Fail as fail:
            self._die(fail.condition, fail.text)
        except expat.ExpatError as exc:
            self._die("not-well-formed", expat.errors.messages[exc.code] if exc.code else str(exc))
        except (ValueError, RecursionError) as exc:  # expat's own limits (e.g. amplification)
            self._die("not-well-formed", str(exc))
        return self._take()

    # ---- WebSocket (RFC 7395)

    def feed_frame(self, message: str | bytes) -> list[Event]:
        """Parses one WebSocket text message, which must be one complete XML document."""
        if self.dead or not self.framed:
            return []
        data = message.encode() if isinstance(message, str) else message
        if not data.strip():
            return []  # tolerated like whitespace keepalives on TCP (RFC 7395 clients use WS pings)
        if len(data) > self.max_stanza_bytes:
            self._die("policy-violation", f"stanza larger than {self.max_stanza_bytes} bytes")
            return self._take()
        doc = _Expat(self, stanza_depth=0)
        self._doc = doc
        try:
            doc.parser.Parse(data, True)
        except _Fail as fail:
            self._die(fail.condition, fail.text)
        except expat.ExpatError as exc:
            self._die("not-well-formed", expat.errors.messages[exc.code] if exc.code else str(exc))
        except (ValueError, RecursionError) as exc:
            self._die("not-well-formed", str(exc))
        return self._take()

    # ---- callbacks from _Expat

    def _on_root(self, tag: str, attrib: dict[str, str]) -> None:
        if self.framed:
            self._events.append(StreamOpen(attrib) if tag == OPEN_TAG else StreamClose())
            return
        if tag != STREAM_TAG:
            ns = tag[1:].partition("}")[0] if tag.startswith("{") else ""
            condition = "invalid-namespace" if tag.endswith("}stream") or ns == NS_STREAMS else "bad-format"
            raise _Fail(condition, "the stream must open with <stream:stream>")
        self._events.append(StreamOpen(attrib))

    def _on_root_end(self) -> None:
        if not self.framed:
            self._events.append(StreamClose())

    def _on_stanza(self, elem: ET.Element, size: int) -> None:
        if self.framed and not elem.tag.startswith("{"):
            _default_namespace(elem, NS_CLIENT)
        self._events.append(Stanza(elem, size))

    def _die(self, condition: str, text: str) -> None:
        self.dead = True
        self._events.append(ParseError(condition, text))

    def _take(self) -> list[Event]:
        events, self._events = self._events, []
        return events


def _default_namespace(elem: ET.Element, ns: str) -> None:
    """Puts unqualified elements in `ns`: a frame without xmlns is read as if it declared jabber:client."""
    for node in elem.iter():
        if not node.tag.startswith("{"):
            node.tag = f"{{{ns}}}{node.tag}"
