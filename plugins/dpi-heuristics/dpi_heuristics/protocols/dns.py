"""DNS over UDP and TCP (RFC 1035), and its multicast cousins mDNS and LLMNR.

A DNS header has no magic number, so the test is structural: sane counts,
an opcode in use, and a question section whose names parse to the end.
mDNS (RFC 6762) and LLMNR (RFC 4795) share the format; they are told apart
from unicast DNS by their multicast destination addresses, which are part of
the protocols' definitions, not a port guess.
"""

from __future__ import annotations

import struct

from dpicore import Verdict
from dpicore.model import TCP, UDP

from ..base import CERTAIN, LIKELY, STRONG, TCP_UDP, Context, Heuristic, found

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
          35: "NAPTR", 41: "OPT", 43: "DS", 46: "RRSIG", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 99: "SPF",
          251: "IXFR", 252: "AXFR", 255: "ANY", 257: "CAA"}

MDNS_GROUPS = (bytes([224, 0, 0, 251]), bytes.fromhex("ff0200000000000000000000000000fb"))
LLMNR_GROUPS = (bytes([224, 0, 0, 252]), bytes.fromhex("ff020000000000000000000000010003"))


def read_name(data: bytes, off: int, depth: int = 0) -> tuple[str, int] | None:
    """Parse a (possibly compressed) name; returns (name, offset after it) or None."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if off >= len(data):
            return None
        n = data[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(data) or jumps > 16:
                return None
            ptr = ((n & 0x3F) << 8) | data[off + 1]
            if ptr >= off:
                return None
            if end < 0:
                end = off + 2
            off = ptr
            jumps += 1
            continue
        if n & 0xC0:
            return None
        label = data[off + 1:off + 1 + n]
        if len(label) < n:
            return None
        labels.append(label.decode("latin-1"))
        off += 1 + n
        if len(labels) > 127:
            return None
    return ".".join(labels), (end if end >= 0 else off)


def parse(msg: bytes) -> dict | None:
    """The header and first question of a DNS message, or None if it is not one."""
    if len(msg) < 12:
        return None
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", msg)
    opcode = (flags >> 11) & 0xF
    if opcode not in (0, 1, 2, 4, 5) or flags & 0x0040:  # Z bit must be zero
        return None
    response = bool(flags & 0x8000)
    if qd > 8 or an > 256 or ns > 256 or ar > 256 or (qd == 0 and not (response or opcode == 5)):
        return None
    if qd == 0 and an + ns + ar == 0:
        return None
    out = {"response": response, "opcode": opcode, "rcode": flags & 0xF, "qd": qd, "an": an}
    off = 12
    if qd:
        name = read_name(msg, off)
        if name is None or name[1] + 4 > len(msg):
            return None
        qtype, qclass = struct.unpack_from("!HH", msg, name[1])
        if qclass & 0x7FFF not in (1, 3, 4, 254, 255):
            return None
        out["query"] = name[0]
        out["qtype"] = QTYPES.get(qtype, str(qtype))
    return out


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    if ctx.transport == TCP:
        if len(data) < 14:
            return None
        (length,) = struct.unpack_from("!H", data)
        if length < 12 or length > 65535:
            return None
        info = parse(data[2:2 + length])
    else:
        info = parse(data)
    if info is None:
        return None
    flow = ctx.flow
    proto = "DNS"
    if ctx.transport == UDP:
        if flow.server in MDNS_GROUPS or flow.client in MDNS_GROUPS:
            proto = "MDNS"
        elif flow.server in LLMNR_GROUPS:
            proto = "LLMNR"
        elif ctx.server_port == 5353 and ctx.client_port == 5353:
            proto = "MDNS"  # unicast mDNS replies keep the well-known pair: the format is the same
        elif ctx.server_port == 5355 or ctx.client_port == 5355:
            proto = "LLMNR"
    confidence = CERTAIN if info.get("query") and info["qd"] == 1 else STRONG if info.get("query") else LIKELY
    return found(proto, confidence, query=info.get("query"), query_type=info.get("qtype"),
                 response=info["response"], rcode=info["rcode"] if info["response"] else None)


HEURISTICS = [
    Heuristic("DNS", detect, TCP_UDP, None, server_first=False, order=60, also=("MDNS", "LLMNR")),
]
