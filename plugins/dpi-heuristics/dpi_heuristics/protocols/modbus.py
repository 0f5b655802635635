"""Modbus/TCP: the MBAP header (transaction id, protocol id 0, length, unit id) and a PDU.

Seven header bytes are weak evidence, so the PDU must fit its function
code: reads (1-4) are exactly address + quantity within the spec's limits,
single writes (5, 6) are 4 bytes (coil values 0x0000/0xFF00), multiple
writes (15, 16) carry a byte count that matches.  A valid request is a
guess until the server's response repeats its transaction id, unit and
function (or the exception form, function | 0x80).  Every ADU in a segment
must parse.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, LIKELY, TCP_ONLY, Context, Heuristic, found

FUNCTIONS = {1: "read coils", 2: "read discrete inputs", 3: "read holding registers", 4: "read input registers",
             5: "write single coil", 6: "write single register", 7: "read exception status", 8: "diagnostics",
             11: "get comm event counter", 15: "write multiple coils", 16: "write multiple registers",
             17: "report server id", 20: "read file record", 21: "write file record", 22: "mask write register",
             23: "read/write multiple registers", 24: "read fifo queue", 43: "encapsulated interface"}
#: Quantity limits of the read functions (coils/inputs: 2000; registers: 125).
READ_LIMITS = {1: 2000, 2: 2000, 3: 125, 4: 125}


def request_pdu(pdu: bytes) -> bool:
    """A request PDU whose size and fields fit its function code."""
    fc = pdu[0]
    if fc in READ_LIMITS:
        return len(pdu) == 5 and 1 <= struct.unpack_from("!H", pdu, 3)[0] <= READ_LIMITS[fc]
    if fc == 5:
        return len(pdu) == 5 and pdu[3:5] in (b"\x00\x00", b"\xff\x00")
    if fc in (6, 22):
        return len(pdu) == (5 if fc == 6 else 7)
    if fc in (15, 16):
        if len(pdu) < 7:
            return False
        qty, count = struct.unpack_from("!HB", pdu, 3)
        need = (qty + 7) // 8 if fc == 15 else 2 * qty
        return qty >= 1 and count == need and len(pdu) == 6 + count
    if fc == 23:
        return len(pdu) >= 11 and len(pdu) == 10 + pdu[9]
    if fc in (7, 11, 17):
        return len(pdu) == 1
    if fc == 43:
        return len(pdu) >= 4 and pdu[1] in (13, 14)
    return fc in (8, 20, 21, 24) and len(pdu) >= 3


def adus(data: bytes) -> list[tuple[int, int, bytes]] | None:
    """(transaction id, unit, PDU) of every ADU in ``data``, or None if any is malformed."""
    out: list[tuple[int, int, bytes]] = []
    off = 0
    while off < len(data):
        if off + 8 > len(data):
            return None
        tid, proto, length, unit = struct.unpack_from("!HHHB", data, off)
        if proto != 0 or not 2 <= length <= 254 or off + 6 + length > len(data):
            return None
        out.append((tid, unit, data[off + 7:off + 6 + length]))
        off += 6 + length
        if len(out) > 16:
            return None
    return out or None


def detect(ctx: Context) -> Verdict | None | object:
    parsed = adus(ctx.payload)
    if parsed is None:
        return None
    memo = ctx.memo.get("Modbus")
    if ctx.from_client:
        if memo is not None or not all(request_pdu(pdu) for _, _, pdu in parsed):
            return None
        tid, unit, pdu = parsed[0]
        ctx.memo["Modbus"] = (tid, unit, pdu[0])
        return ctx.guess(found("Modbus", LIKELY, function=FUNCTIONS.get(pdu[0], str(pdu[0])), unit=unit))
    if memo is None:
        return None
    tid, unit, fc = memo
    for rtid, runit, pdu in parsed:
        if (rtid, runit) == (tid, unit) and pdu[0] in (fc, fc | 0x80):
            return found("Modbus", CERTAIN, function=FUNCTIONS.get(fc, str(fc)), unit=unit,
                         exception=pdu[1] if pdu[0] & 0x80 and len(pdu) > 1 else None)
    return None


HEURISTICS = [
    # The first bytes are a transaction id: no byte filter.
    Heuristic("Modbus", detect, TCP_ONLY, None, order=60),
]
