"""STUN and TURN (RFC 8489, RFC 8656; classic STUN of RFC 3489), over UDP and TCP.

A 20-byte header: two zero bits and a 14-bit message type, a length that
covers exactly the rest of the message (a multiple of 4 by the RFCs;
WhatsApp's servers send others), the magic cookie 0x2112A442 (RFC 5389 and
later) and a transaction ID.  With the cookie that is certain.  Classic STUN has no cookie, so its type must be a
known one and its attributes must tile the body exactly.  Over TCP, ICE
frames messages with a 2-byte length (RFC 4571), which is accepted too.
"""

from __future__ import annotations

import struct

from dpicore import Verdict
from dpicore.model import TCP

from ..base import CERTAIN, STRONG, TCP_ONLY, UDP_ONLY, Context, Heuristic, found

MAGIC = 0x2112A442
METHODS = {0x001: "Binding", 0x002: "SharedSecret", 0x003: "Allocate", 0x004: "Refresh", 0x006: "Send",
           0x007: "Data", 0x008: "CreatePermission", 0x009: "ChannelBind", 0x00A: "Connect",
           0x00B: "ConnectionBind", 0x00C: "ConnectionAttempt"}
CLASSES = ("request", "indication", "success", "error")
#: Message types classic STUN (RFC 3489) defines: Binding and Shared Secret requests and answers.
CLASSIC_TYPES = frozenset({0x0001, 0x0101, 0x0111, 0x0002, 0x0102, 0x0112})
TURN_METHODS = frozenset(range(0x003, 0x00D))


def _attributes_tile(body: bytes) -> bool:
    off = 0
    while off < len(body):
        if off + 4 > len(body):
            return False
        _atype, alen = struct.unpack_from("!HH", body, off)
        off += 4 + ((alen + 3) & ~3)
    return off == len(body)


def message(data: bytes) -> dict[str, str] | None:
    """Method and class of a STUN message filling ``data`` exactly, or None."""
    if len(data) < 20 or data[0] & 0xC0:
        return None
    mtype, length, cookie = struct.unpack_from("!HHI", data)
    if 20 + length != len(data):
        return None
    method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
    cls = ((mtype >> 4) & 1) | ((mtype >> 7) & 2)
    turn = "yes" if method in TURN_METHODS else "no"
    if cookie != MAGIC:
        if length % 4 or mtype not in CLASSIC_TYPES or not _attributes_tile(data[20:]):
            return None
        return {"method": METHODS[method], "class": CLASSES[cls], "turn": turn, "variant": "classic"}
    if method not in METHODS:
        return None
    return {"method": METHODS[method], "class": CLASSES[cls], "turn": turn}


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    info = message(data)
    if info is None and ctx.transport == TCP and len(data) >= 22:
        (framed,) = struct.unpack_from("!H", data)
        if framed + 2 == len(data):
            info = message(data[2:])
    if info is None:
        return None
    return found("STUN", STRONG if info.get("variant") == "classic" else CERTAIN, **info)


HEURISTICS = [
    # A message type below 0x0200 (every method of METHODS, every classic type) starts with 0x00 or 0x01; over
    # TCP the RFC 4571 frame's length comes first, and the filter takes lengths below 16 KB.
    Heuristic("STUN", detect, UDP_ONLY, frozenset({0x00, 0x01}), server_first=False, order=12),
    Heuristic("STUN", detect, TCP_ONLY, frozenset(range(0x00, 0x40)), server_first=False, order=12),
]
