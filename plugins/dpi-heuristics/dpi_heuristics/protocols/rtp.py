"""RTP (RFC 3550) over UDP.

One RTP header is too little evidence (version 2 and a payload type are two
bits and seven), so the layer wants a second packet of the same stream:
the same SSRC with the next sequence numbers.  A lone first packet is only
a guess.  Payload types 72-76 are excluded: with the marker bit they are
RTCP packet types (RFC 5761), which the RTCP heuristic names.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import LIKELY, STRONG, UDP_ONLY, Context, Heuristic, found

#: Static payload types RFC 3551 assigns, and the dynamic range.
PAYLOAD_TYPES = frozenset(range(0, 35)) | frozenset(range(96, 128))
#: How far the sequence number may advance between two captured packets (losses, reordering).
MAX_GAP = 64


def header(data: bytes) -> tuple[int, int, int, int] | None:
    """(payload type, sequence, timestamp, SSRC) of a well-formed RTP packet, or None."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    cc = data[0] & 0x0F
    pt = data[1] & 0x7F
    if pt not in PAYLOAD_TYPES:
        return None
    off = 12 + 4 * cc
    if data[0] & 0x10:  # header extension
        if off + 4 > len(data):
            return None
        off += 4 + 4 * struct.unpack_from("!H", data, off + 2)[0]
    if off > len(data):
        return None
    if data[0] & 0x20 and (data[-1] == 0 or data[-1] > len(data) - off):  # padding
        return None
    seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
    return pt, seq, ts, ssrc


def detect(ctx: Context) -> Verdict | None | object:
    h = header(ctx.payload)
    if h is None:
        return None
    pt, seq, ts, ssrc = h
    streams = ctx.memo.setdefault("RTP", {})
    last = streams.get((ctx.direction, ssrc))
    if last is not None:
        gap = (seq - last[0]) & 0xFFFF
        if 0 < gap <= MAX_GAP and (ts - last[1]) & 0xFFFFFFFF < 0x80000000:
            return found("RTP", STRONG, payload_type=pt, ssrc=f"0x{ssrc:08x}")
    elif any(d == ctx.direction for d, _ in streams) and len(streams) >= 2:
        return None  # several unrelated "streams" in one direction: noise, not RTP
    streams[(ctx.direction, ssrc)] = (seq, ts)
    if ctx.index > 6:
        return None
    return ctx.guess(found("RTP", LIKELY, payload_type=pt, ssrc=f"0x{ssrc:08x}"))


HEURISTICS = [
    Heuristic("RTP", detect, UDP_ONLY, frozenset(range(0x80, 0xC0)), server_first=False, order=40),
]
