"""ICMP and ICMPv6 (RFC 792, RFC 4443 and the message types registered since).

The transport number (1 or 58) already says "ICMP"; the payload is the
ICMP message itself, so the check is that it is one: at least type, code
and checksum, a type IANA registered for that ICMP version, and a code in
that type's range.  Both versions get the canonical name "ICMP"; the
version, type and code go into the metadata.
"""

from __future__ import annotations

from dpicore import Verdict
from dpicore.model import ICMP, ICMPV6

from ..base import CERTAIN, LIKELY, Context, Heuristic, found

#: ICMPv4 type -> (name, highest code).
V4_TYPES = {0: ("echo-reply", 0), 3: ("destination-unreachable", 15), 4: ("source-quench", 0),
            5: ("redirect", 3), 8: ("echo-request", 0), 9: ("router-advertisement", 16),
            10: ("router-solicitation", 0), 11: ("time-exceeded", 1), 12: ("parameter-problem", 2),
            13: ("timestamp", 0), 14: ("timestamp-reply", 0), 15: ("information-request", 0),
            16: ("information-reply", 0), 17: ("address-mask-request", 0), 18: ("address-mask-reply", 0),
            30: ("traceroute", 1), 40: ("photuris", 5), 42: ("extended-echo-request", 0),
            43: ("extended-echo-reply", 4)}
V6_TYPES = {1: ("destination-unreachable", 8), 2: ("packet-too-big", 0), 3: ("time-exceeded", 1),
            4: ("parameter-problem", 10), 128: ("echo-request", 0), 129: ("echo-reply", 0),
            130: ("mld-query", 0), 131: ("mld-report", 0), 132: ("mld-done", 0),
            133: ("router-solicitation", 0), 134: ("router-advertisement", 0), 135: ("neighbor-solicitation", 0),
            136: ("neighbor-advertisement", 0), 137: ("redirect", 0), 138: ("router-renumbering", 255),
            139: ("node-information-query", 2), 140: ("node-information-response", 2),
            141: ("inverse-nd-solicitation", 0), 142: ("inverse-nd-advertisement", 0), 143: ("mldv2-report", 0),
            144: ("home-agent-discovery-request", 0), 145: ("home-agent-discovery-reply", 0),
            146: ("mobile-prefix-solicitation", 0), 147: ("mobile-prefix-advertisement", 0),
            148: ("certification-path-solicitation", 0), 149: ("certification-path-advertisement", 0),
            151: ("multicast-router-advertisement", 0), 152: ("multicast-router-solicitation", 0),
            153: ("multicast-router-termination", 0), 155: ("rpl-control", 255), 160: ("extended-echo-request", 0),
            161: ("extended-echo-reply", 4)}


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    if len(data) < 4:
        return None
    v6 = ctx.transport == ICMPV6
    known = (V6_TYPES if v6 else V4_TYPES).get(data[0])
    version = "ICMPv6" if v6 else "ICMPv4"
    if known is None:
        return found("ICMP", LIKELY, version=version, type=data[0], code=data[1])
    name, max_code = known
    if data[1] > max_code:
        return found("ICMP", LIKELY, version=version, type=data[0], code=data[1])
    return found("ICMP", CERTAIN, version=version, type=data[0], code=data[1], message=name)


HEURISTICS = [
    Heuristic("ICMP", detect, frozenset({ICMP, ICMPV6}), None, server_first=False, order=50),
]
