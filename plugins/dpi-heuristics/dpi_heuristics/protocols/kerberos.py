"""Kerberos V5 (RFC 4120): KDC requests, replies and errors, over UDP and TCP.

Each message is an ASN.1 ``[APPLICATION n]`` (AS-REQ 10, AS-REP 11,
TGS-REQ 12, TGS-REP 13, AP-REQ 14, KRB-ERROR 30) wrapping a SEQUENCE whose
first fields are ``pvno [n] INTEGER 5`` and ``msg-type [n] INTEGER`` equal
to the application number: requests number their fields from 1, replies
and errors from 0.  Over TCP the message follows a 4-byte big-endian length.
"""

from __future__ import annotations

from dpicore import Verdict
from dpicore.model import TCP

from .. import ber
from ..base import CERTAIN, STRONG, TCP_ONLY, UDP_ONLY, Context, Heuristic, found, starts

MESSAGES = {10: "AS-REQ", 11: "AS-REP", 12: "TGS-REQ", 13: "TGS-REP", 14: "AP-REQ", 15: "AP-REP", 30: "KRB-ERROR"}
#: Context number of the pvno field: [1] in KDC-REQ (AS-REQ, TGS-REQ), [0] in every other message.
FIRST_FIELD = {10: 1, 12: 1, 11: 0, 13: 0, 14: 0, 15: 0, 30: 0}
MAX_TCP = 1 << 20


def message(data: bytes) -> str | None:
    """The message type name of a Kerberos message at the start of ``data``, else None."""
    app = ber.tlv(data, 0, partial=True)
    if app is None or app.tag & 0xE0 != 0x60:
        return None
    number = app.tag & 0x1F
    if number not in MESSAGES:
        return None
    seq = ber.tlv(data, app.start, partial=True)
    if seq is None or seq.tag != ber.SEQUENCE or seq.end > app.end:
        return None
    first = FIRST_FIELD[number]
    pvno = ber.explicit_int(data, seq.start, first)
    if pvno is None or pvno[0] != 5:
        return None
    kind = ber.explicit_int(data, pvno[1], first + 1)
    if kind is None or kind[0] != number:
        return None
    return MESSAGES[number]


def detect(ctx: Context) -> Verdict | None:
    if ctx.index > 1:
        return None
    data = ctx.payload
    length = None
    if ctx.transport == TCP:
        if len(data) < 8:
            return None
        length = int.from_bytes(data[:4], "big")
        if not 16 <= length <= MAX_TCP or length < len(data) - 4:
            return None
        data = data[4:]
    kind = message(data)
    app = ber.tlv(data, 0, partial=True)
    if kind is None or app is None or (length is not None and length != app.end):
        return None  # over TCP the record length is the message's
    complete = app.end <= len(data)
    return found("Kerberos", CERTAIN if complete else STRONG, message=kind)


HEURISTICS = [
    Heuristic("Kerberos", detect, UDP_ONLY, frozenset({0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F, 0x7E}), order=30),
    Heuristic("Kerberos", detect, TCP_ONLY, starts(b"\x00"), order=30),
]
