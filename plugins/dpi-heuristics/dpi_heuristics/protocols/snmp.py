"""SNMP v1, v2c (RFC 1157, 3416) and v3 (RFC 3412/3414), BER-encoded, over UDP (and TCP, RFC 3430).

A message is one BER SEQUENCE that spans the datagram, starting with the
version INTEGER (0, 1 or 3).  v1/v2c continue with the community OCTET
STRING and a PDU whose context tag (0xA0-0xA8) names the operation and
whose first fields are request-id, error-status (0-18) and error-index
INTEGERs.  v3 continues with the msgGlobalData SEQUENCE (message id, a
maximum size of at least 484, a one-byte flags string, a security model)
and the security parameters OCTET STRING.  LDAP also starts with
``30 .. 02 01 ..``, but follows with an application tag, never an OCTET
STRING and a PDU tag.
"""

from __future__ import annotations

from dpicore import Verdict

from ..base import CERTAIN, TCP_UDP, Context, Heuristic, found, text
from ..ber import INTEGER, OCTET_STRING, SEQUENCE, tlv

PDUS = {0xA0: "get-request", 0xA1: "get-next-request", 0xA2: "response", 0xA3: "set-request", 0xA4: "trap",
        0xA5: "get-bulk-request", 0xA6: "inform-request", 0xA7: "snmpv2-trap", 0xA8: "report"}
VERSIONS = {0: "v1", 1: "v2c", 3: "v3"}


def _int(data: bytes, off: int, max_len: int = 5) -> tuple[int, int] | None:
    """(value, offset after) of an INTEGER (signed, as request ids may be)."""
    t = tlv(data, off)
    if t is None or t.tag != INTEGER or not 1 <= t.length <= max_len:
        return None
    return int.from_bytes(data[t.start:t.end], "big", signed=True), t.end


def _pdu(data: bytes, off: int, end: int) -> str | None:
    t = tlv(data, off, partial=True)
    if t is None or t.tag not in PDUS:
        return None
    if t.tag == 0xA4:  # v1 trap: enterprise OID first
        return PDUS[t.tag] if off + 2 < len(data) and data[t.start] == 0x06 else None
    request = _int(data, t.start)
    status = _int(data, request[1]) if request else None
    index = _int(data, status[1]) if status else None
    if index is None or not 0 <= status[0] <= 18:
        return None
    return PDUS[t.tag]


def message(data: bytes) -> dict[str, object] | None:
    outer = tlv(data, 0, partial=True)
    if outer is None or outer.tag != SEQUENCE or outer.end < len(data) and data[outer.end:].strip(b"\x00"):
        return None
    version = _int(data, outer.start, 1)
    if version is None or version[0] not in VERSIONS:
        return None
    off = version[1]
    if version[0] in (0, 1):
        community = tlv(data, off)
        if community is None or community.tag != OCTET_STRING or community.length > 255:
            return None
        pdu = _pdu(data, community.end, outer.end)
        if pdu is None:
            return None
        return {"version": VERSIONS[version[0]], "pdu": pdu,
                "community": text(data[community.start:community.end], 255)}
    header = tlv(data, off)
    if header is None or header.tag != SEQUENCE:
        return None
    msg_id = _int(data, header.start)
    max_size = _int(data, msg_id[1]) if msg_id else None
    flags = tlv(data, max_size[1]) if max_size else None
    if flags is None or max_size[0] < 484 or flags.tag != OCTET_STRING or flags.length != 1:
        return None
    model = _int(data, flags.end)
    if model is None or model[1] != header.end or model[0] < 1:
        return None
    params = tlv(data, header.end)
    if params is None or params.tag != OCTET_STRING:
        return None
    return {"version": "v3", "security_model": model[0], "encrypted": bool(data[flags.start] & 0x02)}


def detect(ctx: Context) -> Verdict | None:
    info = message(ctx.payload)
    return None if info is None else found("SNMP", CERTAIN, **info)


HEURISTICS = [
    Heuristic("SNMP", detect, TCP_UDP, frozenset({SEQUENCE}), server_first=False, order=35),
]
