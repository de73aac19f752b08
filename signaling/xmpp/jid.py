"""JIDs (RFC 7622), reduced to what a single-domain server needs: split, compare, case-fold.

Local parts and domains are case-folded (a simplified nodeprep/nameprep); resources are kept as sent.
"""

from __future__ import annotations

from dataclasses import dataclass

#: RFC 7622 §3.3.1: characters a local part may not contain.
_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@ \t\r\n")
_MAX_PART = 1023


class JidError(ValueError):
    """A string that is not a JID we accept (`jid-malformed`)."""


@dataclass(frozen=True, slots=True)
class Jid:
    local: str
    domain: str
    resource: str = ""

    @staticmethod
    def parse(text: str) -> Jid:
        """Splits `local@domain/resource`; raises JidError on anything malformed."""
        if not text or len(text) > 3 * _MAX_PART + 2:
            raise JidError("empty or overlong JID")
        bare, slash, resource = text.partition("/")
        if slash and not resource:
            raise JidError("empty resource")
        local, at, domain = bare.rpartition("@")
        if at and not local:
            raise JidError("empty local part")
        if not domain or len(domain) > _MAX_PART or len(resource) > _MAX_PART or len(local) > _MAX_PART:
            raise JidError("empty domain or overlong part")
        if any(c in _LOCAL_FORBIDDEN for c in local):
            raise JidError("forbidden character in local part")
        if any(c in "@/ \t\r\n" or ord(c) < 0x20 for c in domain):
            raise JidError("forbidden character in domain")
        if any(ord(c) < 0x20 for c in resource):
            raise JidError("control character in resource")
        return Jid(local.lower(), domain.lower().rstrip("."), resource)

    @property
    def bare(self) -> Jid:
        return Jid(self.local, self.domain) if self.resource else self

    @property
    def is_bare(self) -> bool:
        return not self.resource

    def with_resource(self, resource: str) -> Jid:
        return Jid(self.local, self.domain, resource)

    def __str__(self) -> str:
        text = f"{self.local}@{self.domain}" if self.local else self.domain
        return f"{text}/{self.resource}" if self.resource else text


def parse_or_none(text: str | None) -> Jid | None:
    if text is None:
        return None
    try:
        return Jid.parse(text)
    except JidError:
        return None
