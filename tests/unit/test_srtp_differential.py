"""Differential test: our SRTP/SRTCP (bench._native.SrtpSession) against libsrtp (pylibsrtp).

Both directions (ours protect -> libsrtp unprotect, libsrtp protect -> ours unprotect), both profiles the
bridge negotiates, RTP and RTCP, packets with CSRCs and RFC 8285 header extensions, and runs crossing the
sequence number rollover (ROC increment, RFC 3711 3.3.1). SRTP output is a pure function of key, salt,
SSRC, ROC and sequence number, so our protected bytes must equal libsrtp's for the same input.

SRTCP output also depends on the SRTCP index that the sender counts. libsrtp's first index is 1; the
byte-exact RTCP comparison therefore pairs packets by the index they carry, not by position, and accepts
either starting value as long as ours counts up by one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import pylibsrtp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import _native


@dataclass(frozen=True)
class Profile:
    name: str  # ours
    libsrtp: int
    key_len: int
    salt_len: int
    tag_len: int

    @property
    def aead(self) -> bool:
        return "GCM" in self.name


GCM = Profile("SRTP_AEAD_AES_128_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12, 16)
CM80 = Profile("SRTP_AES128_CM_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14, 10)
PROFILES = [pytest.param(GCM, id="gcm"), pytest.param(CM80, id="cm-sha1-80")]

KEY = bytes(range(0x10, 0x20))
SALT = bytes(range(0xA0, 0xAE))


@pytest.fixture(scope="module")
def native() -> ModuleType:
    if not hasattr(_native, "SrtpSession"):
        pytest.fail(
            "bench._native.SrtpSession is missing: the native SRTP is not built yet "
            f"(module exports {sorted(n for n in dir(_native) if not n.startswith('_'))})",
            pytrace=False,
        )
    return _native


class Pair:
    """One direction of one SRTP context, twice: ours and libsrtp's, from the same key and salt."""

    def __init__(self, native: ModuleType, profile: Profile, key: bytes = KEY, salt: bytes = SALT) -> None:
        self.profile = profile
        salt = salt[: profile.salt_len]
        key = key[: profile.key_len]
        self.ours_tx = native.SrtpSession(profile.name, key, salt)
        self.ours_rx = native.SrtpSession(profile.name, key, salt)
        self.theirs_tx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=key + salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile.libsrtp
            )
        )
        self.theirs_rx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=key + salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile.libsrtp
            )
        )


# --- packet builders ---------------------------------------------------------------------------------


def rtp(
    seq: int,
    *,
    ssrc: int = 0x1234ABCD,
    timestamp: int = 0,
    payload: bytes = b"",
    pt: int = 100,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: list[tuple[int, bytes]] | None = None,
) -> bytes:
    """RFC 3550 5.1 header (+ RFC 8285 one-byte header extension block) + payload."""
    first = 0x80 | len(csrcs) | (0x10 if extension is not None else 0)
    header = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq & 0xFFFF, timestamp, ssrc)
    header += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension is not None:
        body = b"".join(bytes([(ext_id << 4) | (len(data) - 1)]) + data for ext_id, data in extension)
        body += bytes(-len(body) % 4)
        header += struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    return header + payload


def rtcp_sr_sdes(ssrc: int, cname: bytes = b"sluice-test", reports: int = 1) -> bytes:
    blocks = b"".join(
        struct.pack("!IIIIII", 0x5000 + i, 0x01000010, 0x0001F000, 20, 0, 0) for i in range(reports)
    )
    sr_body = struct.pack("!IIIIII", ssrc, 0xE1234567, 0x89ABCDEF, 90000, 42, 4200) + blocks
    sr = struct.pack("!BBH", 0x80 | reports, 200, len(sr_body) // 4) + sr_body
    item = bytes([1, len(cname)]) + cname
    chunk = struct.pack("!I", ssrc) + item + bytes(4 - (len(item) % 4))
    sdes = struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk
    return sr + sdes


def rtcp_rr(ssrc: int, reports: int) -> bytes:
    blocks = b"".join(struct.pack("!IIIIII", 0x7000 + i, i, 65536 + i, 5, 0, 0) for i in range(reports))
    return struct.pack("!BBHI", 0x80 | reports, 201, 1 + 6 * reports, ssrc) + blocks


def rtcp_pli(ssrc: int, media_ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x81, 206, 2, ssrc, media_ssrc)


def rtcp_nack(ssrc: int, media_ssrc: int, pid: int, blp: int) -> bytes:
    return struct.pack("!BBHIIHH", 0x81, 205, 3, ssrc, media_ssrc, pid, blp)


def rtcp_bye(ssrc: int) -> bytes:
    return struct.pack("!BBHI", 0x81, 203, 1, ssrc)


def payload(size: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(size))


def varied_rtp_packets(ssrc: int = 0x1234ABCD, first_seq: int = 1000) -> Iterator[bytes]:
    """Sizes from empty to MTU-sized, with CSRCs, one-byte header extensions, marker bits."""
    shapes: list[tuple[int, tuple[int, ...], list[tuple[int, bytes]] | None]] = [
        (0, (), None),
        (1, (), None),
        (15, (), None),
        (160, (), None),
        (1200, (), None),
        (100, (0xAAAA0001,), None),
        (100, tuple(range(1, 16)), None),
        (300, (), [(1, b"\x30")]),
        (300, (), [(1, b"\x30"), (3, b"\x01\x02\x03"), (5, bytes(16))]),
        (1100, (0xC0FFEE,), [(2, b"\x10\x20")]),
    ]
    for i, (size, csrcs, ext) in enumerate(shapes):
        yield rtp(
            first_seq + i,
            ssrc=ssrc,
            timestamp=3000 * i,
            payload=payload(size, i),
            marker=i % 3 == 0,
            csrcs=csrcs,
            extension=ext,
        )


def varied_rtcp_packets(ssrc: int = 0x1234ABCD) -> list[bytes]:
    return [
        rtcp_sr_sdes(ssrc),
        rtcp_sr_sdes(ssrc, reports=3) + rtcp_bye(ssrc),
        rtcp_rr(ssrc, 0),
        rtcp_rr(ssrc, 31),
        rtcp_rr(ssrc, 1) + rtcp_pli(ssrc, 0x1111),
        rtcp_rr(ssrc, 1) + rtcp_nack(ssrc, 0x2222, 65535, 0xFFFF),
    ]


def srtcp_index(profile: Profile, packet: bytes) -> tuple[bool, int]:
    """(E flag, SRTCP index): RFC 3711 3.4 (index before the auth tag), RFC 7714 9.1 (index last)."""
    offset = len(packet) - 4 if profile.aead else len(packet) - profile.tag_len - 4
    (word,) = struct.unpack_from("!I", packet, offset)
    return bool(word >> 31), word & 0x7FFFFFFF


# --- RTP ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_rtp_ours_protect_is_byte_exact_and_libsrtp_unprotects(native: ModuleType, profile: Profile) -> None:
    pair = Pair(native, profile)
    for packet in varied_rtp_packets():
        ours = pair.ours_tx.protect_rtp(packet)
        theirs = pair.theirs_tx.protect(packet)
        assert len(ours) == len(packet) + profile.tag_len
        assert ours == theirs, f"protected bytes differ for a {len(packet)}-byte packet"
        assert pair.theirs_rx.unprotect(ours) == packet


@pytest.mark.parametrize("profile", PROFILES)
def test_rtp_libsrtp_protect_ours_unprotects(native: ModuleType, profile: Profile) -> None:
    pair = Pair(native, profile)
    for packet in varied_rtp_packets(ssrc=0x0BADCAFE, first_seq=31000):
        assert pair.ours_rx.unprotect_rtp(pair.theirs_tx.protect(packet)) == packet


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("first_seq", [65500, 65535, 0xFFFF - 1000])
def test_rtp_sequence_rollover(native: ModuleType, profile: Profile, first_seq: int) -> None:
    """A run of sequence numbers crossing 65535 -> 0: the ROC must become 1 on both sides."""
    pair = Pair(native, profile)
    count = (0x10000 - first_seq) + 60
    for i in range(count):
        seq = (first_seq + i) & 0xFFFF
        packet = rtp(seq, timestamp=960 * i, payload=payload(50 + i % 200, i))
        ours = pair.ours_tx.protect_rtp(packet)
        theirs = pair.theirs_tx.protect(packet)
        assert ours == theirs, f"protected bytes differ at seq {seq} (packet {i})"
        assert pair.theirs_rx.unprotect(ours) == packet, f"libsrtp rejects ours at seq {seq}"
        assert pair.ours_rx.unprotect_rtp(theirs) == packet, f"ours rejects libsrtp's at seq {seq}"


@pytest.mark.parametrize("profile", PROFILES)
def test_rtp_rollover_is_tracked_per_ssrc(native: ModuleType, profile: Profile) -> None:
    """Two SSRCs through one session: one wraps around, the other does not; each keeps its own ROC."""
    pair = Pair(native, profile)
    for i in range(80):
        for ssrc, start in ((0x11111111, 65520), (0x22222222, 1000)):
            packet = rtp((start + i) & 0xFFFF, ssrc=ssrc, timestamp=3000 * i, payload=payload(120, i))
            ours = pair.ours_tx.protect_rtp(packet)
            assert ours == pair.theirs_tx.protect(packet), f"ssrc {ssrc:#x} packet {i}"
            assert pair.theirs_rx.unprotect(ours) == packet
            assert pair.ours_rx.unprotect_rtp(ours) == packet


@pytest.mark.parametrize("profile", PROFILES)
def test_rtp_reordered_packets_across_rollover(native: ModuleType, profile: Profile) -> None:
    """The receiver estimates the ROC (RFC 3711 3.3.1): late pre-wrap packets after post-wrap ones."""
    pair = Pair(native, profile)
    seqs = [65530, 65531, 65532, 0, 65533, 1, 65535, 2, 65534, 3]
    protected = {
        s: pair.theirs_tx.protect(rtp(s, payload=payload(80, s)))
        for s in sorted(seqs, key=lambda s: (s < 100, s))
    }
    for s in seqs:
        assert pair.ours_rx.unprotect_rtp(protected[s]) == rtp(s, payload=payload(80, s)), f"seq {s}"


@pytest.mark.parametrize("profile", PROFILES)
def test_rtp_tampering_and_replay_are_rejected(native: ModuleType, profile: Profile) -> None:
    pair = Pair(native, profile)
    packet = rtp(7, payload=payload(200))
    protected = pair.theirs_tx.protect(packet)
    for position in (1, 12, len(protected) // 2, len(protected) - 1):
        tampered = bytearray(protected)
        tampered[position] ^= 0x01
        with pytest.raises(ValueError):
            pair.ours_rx.unprotect_rtp(bytes(tampered))
    with pytest.raises(ValueError):
        pair.ours_rx.unprotect_rtp(protected[: profile.tag_len])  # shorter than header + tag
    assert pair.ours_rx.unprotect_rtp(protected) == packet
    with pytest.raises(ValueError):
        pair.ours_rx.unprotect_rtp(protected)  # replayed (RFC 3711 3.3.2)


@pytest.mark.parametrize("profile", PROFILES)
def test_rtp_wrong_key_is_rejected(native: ModuleType, profile: Profile) -> None:
    pair = Pair(native, profile)
    other = native.SrtpSession(profile.name, bytes(profile.key_len), SALT[: profile.salt_len])
    with pytest.raises(ValueError):
        other.unprotect_rtp(pair.theirs_tx.protect(rtp(1, payload=payload(100))))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    profile=st.sampled_from([GCM, CM80]),
    key=st.binary(min_size=16, max_size=16),
    salt=st.binary(min_size=14, max_size=14),
    ssrc=st.integers(0, 2**32 - 1),
    first_seq=st.integers(0, 0xFFFF),
    body=st.lists(
        st.tuples(
            st.binary(max_size=1200),
            st.lists(st.integers(0, 2**32 - 1), max_size=15),
            st.none()
            | st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=4),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_rtp_random_packets_match_libsrtp(
    native: ModuleType,
    *,
    profile: Profile,
    key: bytes,
    salt: bytes,
    ssrc: int,
    first_seq: int,
    body: list[tuple[bytes, list[int], list[tuple[int, bytes]] | None]],
) -> None:
    pair = Pair(native, profile, key, salt)
    for i, (data, csrcs, ext) in enumerate(body):
        packet = rtp(
            first_seq + i, ssrc=ssrc, timestamp=i * 3000, payload=data, csrcs=tuple(csrcs), extension=ext
        )
        ours = pair.ours_tx.protect_rtp(packet)
        theirs = pair.theirs_tx.protect(packet)
        assert ours == theirs
        assert pair.theirs_rx.unprotect(ours) == packet
        assert pair.ours_rx.unprotect_rtp(theirs) == packet


# --- RTCP --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_rtcp_ours_protect_libsrtp_unprotects(native: ModuleType, profile: Profile) -> None:
    pair = Pair(native, profile)
    indices = []
    for packet in varied_rtcp_packets():
        ours = pair.ours_tx.protect_rtcp(packet)
        assert len(ours) == len(packet) + 4 + profile.tag_len
        encrypted, index = srtcp_index(profile, ours)
        assert encrypted, "the E flag must be set: SRTCP payloads are encrypted"
        indices.append(index)
        assert ours[:8] == packet[:8], "the first RTCP header and SSRC stay in the clear"
        assert pair.theirs_rx.unprotect_rtcp(ours) == packet
    assert indices == list(range(indices[0], indices[0] + len(indices))), "SRTCP index counts up by one"


@pytest.mark.parametrize("profile", PROFILES)
def test_rtcp_libsrtp_protect_ours_unprotects(native: ModuleType, profile: Profile) -> None:
    pair = Pair(native, profile)
    for packet in varied_rtcp_packets(ssrc=0x0BADCAFE):
        assert pair.ours_rx.unprotect_rtcp(pair.theirs_tx.protect_rtcp(packet)) == packet


@pytest.mark.parametrize("profile", PROFILES)
def test_rtcp_protect_is_byte_exact_for_the_same_index(native: ModuleType, profile: Profile) -> None:
    pair = Pair(native, profile)
    packet = rtcp_sr_sdes(0x1234ABCD, reports=2)
    ours = {srtcp_index(profile, p)[1]: p for p in (pair.ours_tx.protect_rtcp(packet) for _ in range(6))}
    theirs = {srtcp_index(profile, p)[1]: p for p in (pair.theirs_tx.protect_rtcp(packet) for _ in range(6))}
    common = sorted(ours.keys() & theirs.keys())
    assert len(common) >= 5, f"SRTCP indices too far apart: ours {sorted(ours)}, libsrtp {sorted(theirs)}"
    for index in common:
        assert ours[index] == theirs[index], f"protected RTCP differs at SRTCP index {index}"


@pytest.mark.parametrize("profile", PROFILES)
def test_rtcp_tampering_and_replay_are_rejected(native: ModuleType, profile: Profile) -> None:
    pair = Pair(native, profile)
    packet = rtcp_rr(0x1234ABCD, 2)
    protected = pair.theirs_tx.protect_rtcp(packet)
    for position in (4, 9, len(protected) - 1):
        tampered = bytearray(protected)
        tampered[position] ^= 0x80
        with pytest.raises(ValueError):
            pair.ours_rx.unprotect_rtcp(bytes(tampered))
    assert pair.ours_rx.unprotect_rtcp(protected) == packet
    with pytest.raises(ValueError):
        pair.ours_rx.unprotect_rtcp(protected)


def test_profiles_are_advertised(native: ModuleType) -> None:
    assert {GCM.name, CM80.name} <= set(native.SRTP_PROFILES)


def test_unknown_profile_or_bad_key_length_is_rejected(native: ModuleType) -> None:
    with pytest.raises(ValueError):
        native.SrtpSession("SRTP_NULL_NULL", KEY, SALT)
    with pytest.raises(ValueError):
        native.SrtpSession(CM80.name, KEY[:15], SALT)
