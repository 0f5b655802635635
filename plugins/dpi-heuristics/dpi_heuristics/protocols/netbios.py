"""NetBIOS over TCP/IP (RFC 1001/1002): name service, datagram service, session service.

All three carry NetBIOS names in "first-level encoding": 16 bytes spread
over 32 letters 'A'..'P', length-prefixed like a DNS label.  That encoding
is what tells them apart from look-alikes:

* **name service** (UDP): the DNS message format (:mod:`.dnswire`) with an
  encoded name in the question (or the first answer), NBNS opcodes;
* **datagram service** (UDP): a 10-byte header (message type 0x10-0x16,
  flags with the four high bits clear), then for data messages a length
  that counts exactly the rest of the datagram and two encoded names;
* **session service** (TCP): a session request (0x81) whose length covers
  exactly two encoded names, and the short control packets (positive 0x82
  and negative 0x83 responses, retarget 0x84, keepalive 0x85).  Session
  messages (type 0x00) carry SMB, which :mod:`.smb` names.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, LIKELY, STRONG, TCP_ONLY, UDP_ONLY, Context, Heuristic, found
from .dnswire import netbios_encoded, parse

#: NBNS opcodes: query, registration, release, WACK, refresh (two codes), multi-homed registration.
NBNS_OPCODES = frozenset({0, 5, 6, 7, 8, 9, 15})
NBNS_OPNAMES = {0: "query", 5: "registration", 6: "release", 7: "wack", 8: "refresh", 9: "refresh",
                15: "multihomed registration"}
DGM_TYPES = {0x10: "direct unique", 0x11: "direct group", 0x12: "broadcast", 0x13: "error",
             0x14: "query request", 0x15: "positive query response", 0x16: "negative query response"}
SESSION_TYPES = {0x81: "session request", 0x82: "positive session response", 0x83: "negative session response",
                 0x84: "retarget session response", 0x85: "session keepalive"}


def decode_name(label: str) -> tuple[str, int] | None:
    """(name, suffix byte) of a first-level encoded label, or None."""
    if not netbios_encoded(label):
        return None
    raw = bytes(((ord(label[i]) - 65) << 4) | (ord(label[i + 1]) - 65) for i in range(0, 32, 2))
    return raw[:15].decode("latin-1").rstrip(" \x00"), raw[15]


def encoded_name(data: bytes, off: int) -> tuple[str, int, int] | None:
    """An encoded name at ``off`` (0x20, 32 letters, scope labels, 0): (name, suffix, offset after)."""
    if off + 34 > len(data) or data[off] != 0x20:
        return None
    decoded = decode_name(data[off + 1:off + 33].decode("latin-1"))
    if decoded is None:
        return None
    off += 33
    while off < len(data) and data[off] != 0:  # NetBIOS scope: DNS-style labels
        n = data[off]
        if n > 63 or off + 1 + n > len(data):
            return None
        off += 1 + n
    if off >= len(data):
        return None
    return decoded[0], decoded[1], off + 1


def name_service(data: bytes) -> Verdict | None:
    msg = parse(data, opcodes=NBNS_OPCODES)
    if msg is None:
        return None
    names = [q.name for q in msg.questions] or msg.owners[:1]
    if not names:
        return None
    decoded = decode_name(names[0].split(".", 1)[0])
    if decoded is None:
        return None
    return found("NetBIOS", CERTAIN if msg.complete else STRONG, service="name",
                 operation=NBNS_OPNAMES.get(msg.opcode), response=msg.response, name=decoded[0],
                 suffix=f"0x{decoded[1]:02x}")


def datagram_service(data: bytes) -> Verdict | None:
    if len(data) < 11 or data[0] not in DGM_TYPES or data[1] & 0xF0:
        return None
    kind = data[0]
    if kind == 0x13:  # error: header + one error code
        if len(data) == 11 and data[10] in (0x82, 0x83, 0x84):
            return found("NetBIOS", STRONG, service="datagram", message=DGM_TYPES[kind])
        return None
    if kind >= 0x14:  # query request / responses: header + destination name
        dest = encoded_name(data, 10)
        if dest is None or dest[2] != len(data):
            return None
        return found("NetBIOS", CERTAIN, service="datagram", message=DGM_TYPES[kind], destination=dest[0])
    if len(data) < 14 + 68:
        return None
    (length,) = struct.unpack_from("!H", data, 10)
    if length != len(data) - 14:
        return None
    source = encoded_name(data, 14)
    dest = encoded_name(data, source[2]) if source else None
    if source is None or dest is None:
        return None
    user = data[dest[2]:]
    return found("NetBIOS", CERTAIN, service="datagram", message=DGM_TYPES[kind], source=source[0],
                 destination=dest[0], carries="SMB" if user[:4] == b"\xffSMB" else None)


_ENCODING_LETTERS = b"ABCDEFGHIJKLMNOP"


def may_be_name_service(data: bytes) -> bool:
    """Cheap necessary condition for :func:`name_service`, checked before parsing the whole message.

    The name it decodes (the first question's, else the first record's owner)
    starts right after the 12-byte header, where a compression pointer is
    impossible; its first dotted part must be 32 letters 'A'..'P', so its
    first label is at least 32 bytes long and starts with 32 such letters.
    DNS, mDNS and LLMNR datagrams, which run this heuristic too, fail here.
    """
    return len(data) >= 45 and 32 <= data[12] < 64 and not data[13:45].strip(_ENCODING_LETTERS)


def detect_udp(ctx: Context) -> Verdict | None:
    data = ctx.payload
    if 0x10 <= data[0] <= 0x16 and (v := datagram_service(data)) is not None:
        return v
    return name_service(data) if may_be_name_service(data) else None


def session_packet(data: bytes) -> tuple[str, Verdict | None] | None:
    """("decided", verdict) for a session request, ("control", guess) for the short control packets."""
    if len(data) < 4 or data[0] not in SESSION_TYPES or data[1] & 0xFE:
        return None
    kind = data[0]
    length = ((data[1] & 1) << 16) | struct.unpack_from("!H", data, 2)[0]
    if kind == 0x81:
        if length < 68 or length > len(data) - 4:
            return None
        called = encoded_name(data, 4)
        calling = encoded_name(data, called[2]) if called else None
        if called is None or calling is None or calling[2] != 4 + length:
            return None
        return "decided", found("NetBIOS", CERTAIN, service="session", message=SESSION_TYPES[kind],
                                called=called[0], calling=calling[0])
    expected = {0x82: 0, 0x83: 1, 0x84: 6, 0x85: 0}[kind]
    if length != expected or len(data) != 4 + expected:
        return None
    if kind == 0x83 and not 0x80 <= data[4] <= 0x8F:
        return None
    return "control", found("NetBIOS", LIKELY, service="session", message=SESSION_TYPES[kind])


def detect_tcp(ctx: Context) -> Verdict | None | object:
    result = session_packet(ctx.payload)
    if result is None:
        return None
    kind, verdict = result
    if kind == "decided":
        return verdict
    # A lone 4-byte control packet is thin evidence: wait for the session request or the SMB that follows.
    if ctx.index > 3:
        return None
    return ctx.guess(verdict)


HEURISTICS = [
    # Name service IDs are random, so no first-byte filter over UDP.
    Heuristic("NetBIOS", detect_udp, UDP_ONLY, None, server_first=False, order=55),
    Heuristic("NetBIOS", detect_tcp, TCP_ONLY, frozenset(SESSION_TYPES), server_first=False, order=25),
]
