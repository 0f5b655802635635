"""RDP (MS-RDPBCGR): TPKT + X.224 connection request with RDP's own variable part.

Every RDP connection opens with a TPKT header (``03 00`` and a length
covering the packet) and an X.224 Connection Request whose length indicator
covers the rest.  Other ISO-on-TCP users (S7comm, IEC 61850 MMS, H.323)
send the same Connection Request, but with X.224 parameters (TSAPs, TPDU
size: bytes 0xC0-0xC2); RDP puts its own data there instead:

* a cookie, ``Cookie: mstshash=<user>\\r\\n`` or a routing token
  ``Cookie: msts=...\\r\\n``,
* an RDP Negotiation Request (type 1, length 8, protocol flags) and
  optionally a Correlation Info (type 6, length 36).

Either makes the request RDP.  A bare request (no variable part) is only a
guess until the server answers with an RDP Negotiation Response/Failure in
its Connection Confirm, or the client follows with an MCS Connect-Initial
(T.125, ``7f 65``) in an X.224 Data TPDU.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, LIKELY, STRONG, TCP_ONLY, Context, Heuristic, found, text

CR, CC, DT = 0xE0, 0xD0, 0xF0
PROTOCOLS = {0: "rdp", 1: "ssl", 2: "hybrid", 4: "rdstls", 8: "hybrid_ex", 16: "rdsaad"}


def tpkt(data: bytes) -> bytes | None:
    """The X.224 part of a TPKT packet (possibly cut by the segment), or None."""
    if len(data) < 7 or data[0] != 3 or data[1] != 0:
        return None
    (length,) = struct.unpack_from("!H", data, 2)  # covers the TPKT header too
    if length < 7:
        return None
    return data[4:length]


def _requested(flags: int) -> list[str]:
    return [name for bit, name in PROTOCOLS.items() if bit and flags & bit] or ["rdp"]


def connection_request(x224: bytes) -> tuple[str, dict[str, object]] | None:
    """("rdp", metadata), ("bare", {}) or None for an X.224 CR that is not RDP's."""
    li = x224[0]
    if x224[1] != CR or li < 6 or li + 1 != len(x224) or x224[2:4] != b"\x00\x00" or x224[6] & 0x0F:
        return None
    rest = x224[7:]
    if not rest:
        return "bare", {}
    meta: dict[str, object] = {}
    if rest.startswith(b"Cookie: "):
        end = rest.find(b"\r\n")
        if end < 0:
            return None
        cookie = rest[8:end]
        if cookie.startswith(b"mstshash="):
            meta["user"] = text(cookie[9:], 128)
        elif not cookie.startswith(b"msts="):
            return None
        rest = rest[end + 2:]
    if rest:
        if len(rest) < 8 or rest[0] != 1 or rest[2:4] != b"\x08\x00":
            return None
        (requested,) = struct.unpack_from("<I", rest, 4)
        if requested > 0x1F:
            return None
        meta["requested_protocols"] = _requested(requested)
        rest = rest[8:]
        if rest and (len(rest) != 36 or rest[0] != 6 or rest[2:4] != b"\x24\x00"):
            return None
    return "rdp", meta


def connection_confirm(x224: bytes) -> dict[str, object] | None:
    """Metadata of an X.224 CC carrying an RDP Negotiation Response or Failure, else None."""
    li = x224[0]
    if x224[1] != CC or li + 1 != len(x224) or len(x224) != 15:
        return None
    neg = x224[7:]
    if neg[2:4] != b"\x08\x00":
        return None
    (value,) = struct.unpack_from("<I", neg, 4)
    if neg[0] == 2 and value in PROTOCOLS:
        return {"selected_protocol": PROTOCOLS[value]}
    if neg[0] == 3 and 1 <= value <= 6:
        return {"negotiation_failure": value}
    return None


def mcs_connect(x224: bytes) -> bool:
    """An X.224 Data TPDU carrying a T.125 MCS Connect-Initial or Connect-Response."""
    return len(x224) >= 5 and x224[0] == 2 and x224[1] == DT and x224[2] == 0x80 and x224[3] == 0x7F \
        and x224[4] in (0x65, 0x66)


def detect(ctx: Context) -> Verdict | None | object:
    x224 = tpkt(ctx.payload)
    if x224 is None or len(x224) < 2:
        return None
    if ctx.from_client and ctx.index == 1:
        result = connection_request(x224)
        if result is None:
            return None
        kind, meta = result
        if kind == "rdp":
            return found("RDP", CERTAIN, **meta)
        return ctx.guess(found("RDP", LIKELY, variant="bare connection request"))
    if not ctx.from_client and x224[1] == CC:
        meta = connection_confirm(x224)
        if meta is not None:
            return found("RDP", CERTAIN, **meta)
        return _legacy_confirm(ctx, x224)
    if mcs_connect(x224):
        return found("RDP", STRONG, variant="mcs connect")
    return None


def _legacy_confirm(ctx: Context, x224: bytes) -> object | None:
    """A legacy Connection Confirm (no negotiation data): wait for the MCS Connect-Initial."""
    if len(x224) == 7 and ctx.index <= 2:
        return ctx.guess(found("RDP", LIKELY, variant="legacy connection confirm"))
    return None


HEURISTICS = [
    Heuristic("RDP", detect, TCP_ONLY, frozenset({0x03}), server_first=False, order=28),
]
