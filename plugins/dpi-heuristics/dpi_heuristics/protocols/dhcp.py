"""DHCP (RFC 2131/2132): BOOTP messages carrying the DHCP magic cookie.

A BOOTP header of fixed layout (op 1 or 2, a hardware type, a hardware
address length of at most 16, hops) followed at offset 236 by the magic
cookie 0x63825363, then options as type-length-value up to the end option.
The cookie is four fixed bytes at a fixed offset, and the options must
parse: certain.  Plain BOOTP without the cookie is not claimed.
"""

from __future__ import annotations

from dpicore import Verdict

from ..base import CERTAIN, UDP_ONLY, Context, Heuristic, found, text

MAGIC = b"\x63\x82\x53\x63"
MESSAGE_TYPES = {1: "discover", 2: "offer", 3: "request", 4: "decline", 5: "ack", 6: "nak", 7: "release",
                 8: "inform", 9: "forcerenew", 10: "leasequery", 11: "leaseunassigned", 12: "leaseunknown",
                 13: "leaseactive", 14: "bulkleasequery", 15: "leasequerydone", 16: "activeleasequery",
                 17: "leasequerystatus", 18: "tls"}


def options(data: bytes, off: int = 240) -> dict[int, bytes] | None:
    """The options from ``off`` to the end option (or the end of a cut capture); None if malformed."""
    out: dict[int, bytes] = {}
    while off < len(data):
        code = data[off]
        if code == 255:
            return out
        if code == 0:
            off += 1
            continue
        if off + 1 >= len(data):
            return out
        length = data[off + 1]
        value = data[off + 2:off + 2 + length]
        if len(value) < length:
            return out  # cut by the capture
        out.setdefault(code, value)
        off += 2 + length
    return out


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    if len(data) < 240 or data[0] not in (1, 2) or data[236:240] != MAGIC:
        return None
    htype, hlen, hops = data[1], data[2], data[3]
    if not 1 <= htype <= 40 or hlen > 16 or hops > 16:
        return None
    opts = options(data)
    if opts is None:
        return None
    kind = opts.get(53, b"")
    if len(kind) != 1 and 53 in opts:
        return None
    return found("DHCP", CERTAIN, message_type=MESSAGE_TYPES.get(kind[0]) if kind else None,
                 hostname=text(opts[12], 64) if 12 in opts else None,
                 vendor_class=text(opts[60], 128) if 60 in opts else None)


HEURISTICS = [
    Heuristic("DHCP", detect, UDP_ONLY, frozenset({1, 2}), server_first=False, order=30),
]
