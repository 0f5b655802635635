"""The DNS message format (RFC 1035), shared by DNS, mDNS, LLMNR and NetBIOS name service.

All four protocols use the same 12-byte header and the same name and
resource-record encoding, so one strict parser serves them; the heuristics
differ only in how they tell the readings apart (:func:`reading`).

A DNS header has no magic number.  What makes the test strict is walking
the *whole* message: every question and resource record must parse, with
names free of control bytes, known classes and record data inside the
message, and the last record must end where the datagram ends.  Random
binary payloads (RTP, encrypted UDP, RPC) practically never survive that.

This module exposes no ``HEURISTICS``; ``dns.py``, ``mdns.py`` and
``llmnr.py`` each register their own, so each is selectable and blockable by
its own name.
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

from dpicore import Verdict
from dpicore.model import TCP, UDP

from ..base import CERTAIN, PORT_TIE, STRONG, Context, Detector, found

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
          35: "NAPTR", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS",
          99: "SPF", 251: "IXFR", 252: "AXFR", 255: "ANY", 257: "CAA"}
#: IN, CH, HS, NONE, ANY (the top bit is mDNS's unicast-response / cache-flush flag).
CLASSES = frozenset({1, 3, 4, 254, 255})
#: Opcodes in use: QUERY, IQUERY, STATUS, NOTIFY, UPDATE.
DNS_OPCODES = frozenset({0, 1, 2, 4, 5})
TYPE_OPT = 41

MDNS_GROUPS = (bytes([224, 0, 0, 251]), bytes.fromhex("ff0200000000000000000000000000fb"))
LLMNR_GROUPS = (bytes([224, 0, 0, 252]), bytes.fromhex("ff020000000000000000000000010003"))
MDNS_PORT = 5353
LLMNR_PORT = 5355

MAX_QUESTIONS = 64
MAX_RECORDS = 1024

_HEADER = struct.Struct("!HHHHHH")
_QUESTION_TAIL = struct.Struct("!HH")
_RECORD_TAIL = struct.Struct("!HHIH")
_LENGTH = struct.Struct("!H")
#: A byte a name label may not hold (control characters).
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


class Question(NamedTuple):
    name: str
    qtype: int
    qclass: int


class Message(NamedTuple):
    ident: int
    flags: int
    counts: tuple[int, int, int, int]
    questions: list[Question]
    #: Every record parsed and the message ended there (else the capture cut it short).
    complete: bool
    #: Some question or record class had its top bit set (mDNS's QU / cache-flush flag).
    top_class_bit: bool
    #: Owner names of the answer, authority and additional records that were parsed.
    owners: list[str]

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def response(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


def read_name(data: bytes, off: int) -> tuple[str, int] | None:
    """A (possibly compressed) name at ``off``: (dotted name, offset after it), or None.

    Pointers must point backwards (no loops); labels hold no control bytes
    (names are text: host names, DNS-SD instance names in UTF-8).
    """
    labels: list[bytes] = []
    size = len(data)
    end = -1
    jumps = 0
    total = 0
    while True:
        if off >= size:
            return None
        n = data[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            if off + 1 >= size or jumps > 32:
                return None
            ptr = ((n & 0x3F) << 8) | data[off + 1]
            if ptr >= off or ptr < 12:
                return None
            if end < 0:
                end = off + 2
            off = ptr
            jumps += 1
            continue
        if n & 0xC0 or off + 1 + n > size:
            return None
        labels.append(data[off + 1:off + 1 + n])
        total += n + 1
        if total > 255:
            return None
        off += 1 + n
    # One check and one decode for the whole name: "." is no control byte, so the joined name has
    # one exactly when some label has.
    name = b".".join(labels)
    if _CONTROL.search(name) is not None:
        return None
    return name.decode("latin-1"), (end if end >= 0 else off)


def parse(msg: bytes, opcodes: frozenset[int] = DNS_OPCODES, max_questions: int = MAX_QUESTIONS
          ) -> Message | None:
    """The whole message, or None when it is not one.

    A message whose records run past the end of ``msg`` (a capture cut by its
    snap length, a TCP message split over segments) is returned with
    ``complete=False`` as long as its questions parsed; bytes after the last
    record are allowed only when they are zero padding.
    """
    if len(msg) < 12:
        return None
    ident, flags, qd, an, ns, ar = _HEADER.unpack_from(msg)
    if (flags >> 11) & 0xF not in opcodes or flags & 0x0040:  # Z bit must be zero
        return None
    if qd > max_questions or an + ns + ar > MAX_RECORDS or qd + an + ns + ar == 0:
        return None
    off = 12
    questions: list[Question] = []
    top = False
    for _ in range(qd):
        name = read_name(msg, off)
        if name is None or name[1] + 4 > len(msg):
            return None
        qtype, qclass = _QUESTION_TAIL.unpack_from(msg, name[1])
        if qclass & 0x7FFF not in CLASSES or qtype == 0:
            return None
        top |= bool(qclass & 0x8000)
        questions.append(Question(name[0], qtype, qclass))
        off = name[1] + 4
    owners: list[str] = []
    complete = True
    for _ in range(an + ns + ar):
        if off >= len(msg):
            complete = False
            break
        name = read_name(msg, off)
        if name is None:
            if len(msg) - off < 256 and b"\x00" not in msg[off:]:
                complete = False  # cut inside the name
                break
            return None
        if name[1] + 10 > len(msg):
            complete = False
            break
        rtype, rclass, _ttl, rdlen = _RECORD_TAIL.unpack_from(msg, name[1])
        if rtype == 0 or (rtype != TYPE_OPT and rclass & 0x7FFF not in CLASSES):
            return None
        if rtype != TYPE_OPT:
            top |= bool(rclass & 0x8000)
        owners.append(name[0])
        off = name[1] + 10 + rdlen
        if off > len(msg):
            complete = False
            break
    if complete and off < len(msg) and msg[off:].strip(b"\x00"):
        return None
    return Message(ident, flags, (qd, an, ns, ar), questions, complete, top, owners)


def message_of(ctx: Context) -> Message | None:
    """The DNS message this packet carries: the datagram over UDP, the 2-byte-length-framed one over TCP."""
    data = ctx.payload
    if ctx.transport == TCP:
        if len(data) < 14:
            return None
        (length,) = _LENGTH.unpack_from(data)
        if length < 12:
            return None
        msg = parse(data[2:2 + length])
        if msg is not None and length > len(data) - 2:
            msg = msg._replace(complete=False)
        return msg
    return parse(data)


class Reading(NamedTuple):
    """Which of the three protocols a DNS-format datagram is, and how sure that is."""

    protocol: str
    confidence: float
    message: Message
    #: True when only the port numbers chose between two valid readings.
    port_hint: bool = False


def _mdns_marks(msg: Message) -> bool:
    """Structure only mDNS gives a message (RFC 6762 §18): a zero ID with QU/cache-flush bits,
    unsolicited answers, or names under ``.local``."""
    if msg.ident != 0 or msg.opcode != 0:
        return False
    if msg.top_class_bit or (msg.response and not msg.questions):
        return True
    names = [q.name for q in msg.questions] + msg.owners
    return bool(names) and all(n.lower().endswith(".local") for n in names)


def _llmnr_header(msg: Message) -> bool:
    """RFC 4795 §2.1.1: opcode 0 and the four Z bits and RA zero (LLMNR has no recursion)."""
    return msg.opcode == 0 and not msg.flags & 0x00F0 and len(msg.questions) == 1


def _plain_dns(msg: Message) -> bool:
    """What unicast DNS allows: a question (except UPDATE/NOTIFY), no class flag bits."""
    if msg.top_class_bit:
        return False
    return bool(msg.questions) or msg.opcode in (4, 5)


def _confidence(msg: Message) -> float:
    return CERTAIN if msg.complete and len(msg.questions) == 1 else STRONG


def reading(ctx: Context) -> Reading | None:
    """The protocol of this packet's DNS-format message, computed once per packet for the three heuristics.

    Multicast destinations define mDNS and LLMNR; without one, mDNS's own
    header conventions decide; only when the message is valid as either
    unicast DNS or mDNS/LLMNR do the well-known ports break the tie, and the
    reading says so (``port_hint``) at :data:`~dpi_heuristics.base.PORT_TIE`.
    """
    key = (ctx.direction, ctx.index)
    cached = ctx.memo.get("dnswire")
    if cached is not None and cached[0] == key:
        return cached[1]
    result = _reading(ctx)
    ctx.memo["dnswire"] = (key, result)
    return result


def _reading(ctx: Context) -> Reading | None:
    msg = message_of(ctx)
    if msg is None or _netbios_name(msg):
        return None
    if ctx.transport == UDP:
        # The key's two ends are the client's and the server's: Flow.server and server_port are read from
        # it per call, and this runs for every DNS-like datagram.
        key = ctx.flow.key
        if key.addr_a in MDNS_GROUPS or key.addr_b in MDNS_GROUPS:
            return Reading("MDNS", CERTAIN, msg)
        if (key.addr_a in LLMNR_GROUPS or key.addr_b in LLMNR_GROUPS) and ctx.flow.server in LLMNR_GROUPS:
            return Reading("LLMNR", CERTAIN if _llmnr_header(msg) else STRONG, msg)
        if _mdns_marks(msg):
            return Reading("MDNS", STRONG, msg)
        plain = _plain_dns(msg)
        ports = (key.port_a, key.port_b)
        if plain and MDNS_PORT in ports:
            return Reading("MDNS", PORT_TIE, msg, True)
        if plain and LLMNR_PORT in ports and _llmnr_header(msg):
            return Reading("LLMNR", PORT_TIE, msg, True)
        if not plain:
            return None
        return Reading("DNS", _confidence(msg), msg)
    if not _plain_dns(msg):
        return None
    return Reading("DNS", _confidence(msg), msg)


def netbios_encoded(label: str) -> bool:
    """A NetBIOS first-level encoded name (RFC 1001 §14.1): 32 letters 'A'..'P'."""
    return len(label) == 32 and all("A" <= c <= "P" for c in label)


def _netbios_name(msg: Message) -> bool:
    """NetBIOS name service reuses this format with encoded names: that is NBNS, not DNS."""
    names = [q.name for q in msg.questions] or msg.owners[:1]
    return bool(names) and netbios_encoded(names[0].split(".", 1)[0])


def verdict_fields(msg: Message) -> dict[str, object]:
    """The metadata every DNS-family verdict carries."""
    q = msg.questions[0] if msg.questions else None
    return {
        "query": q.name if q else None,
        "query_type": (QTYPES.get(q.qtype, str(q.qtype)) if q else None),
        "response": msg.response,
        "rcode": msg.rcode if msg.response else None,
    }


def detector(protocol: str) -> Detector:
    """The detector of one family member: it answers only when :func:`reading` names ``protocol``."""
    def detect(ctx: Context) -> Verdict | None:
        r = reading(ctx)
        if r is None or r.protocol != protocol:
            return None
        return found(protocol, r.confidence, port_hint=r.port_hint or None, **verdict_fields(r.message))
    detect.__name__ = f"detect_{protocol.lower()}"
    return detect
