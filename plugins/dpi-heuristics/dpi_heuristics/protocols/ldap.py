"""LDAP (RFC 4511) over TCP, and CLDAP over UDP: a BER LDAPMessage.

``SEQUENCE { messageID INTEGER, protocolOp [APPLICATION n], controls [0]
OPTIONAL }``.  The application tag names the operation; the common ones
are checked field by field (a bind's version 1-3 and DN, a search's scope
and deref enumerations, a result's resultCode), so SNMP (whose INTEGER is
followed by an OCTET STRING community) and other BER traffic stay out.
"""

from __future__ import annotations

from dpicore import Verdict

from .. import ber
from ..base import CERTAIN, STRONG, TCP_UDP, Context, Heuristic, found, starts

#: [APPLICATION n] tags (constructed 0x60|n, primitive 0x40|n) and their operation names.
OPERATIONS = {
    0x60: "bindRequest", 0x61: "bindResponse", 0x42: "unbindRequest", 0x63: "searchRequest",
    0x64: "searchResEntry", 0x65: "searchResDone", 0x73: "searchResRef", 0x66: "modifyRequest",
    0x67: "modifyResponse", 0x68: "addRequest", 0x69: "addResponse", 0x4A: "delRequest", 0x6B: "delResponse",
    0x6C: "modDNRequest", 0x6D: "modDNResponse", 0x6E: "compareRequest", 0x6F: "compareResponse",
    0x50: "abandonRequest", 0x77: "extendedRequest", 0x78: "extendedResponse", 0x79: "intermediateResponse",
}
RESULTS = frozenset({0x61, 0x65, 0x67, 0x69, 0x6B, 0x6D, 0x6F, 0x78})
#: Operations whose fields are checked one by one (the rest only by their first tag): certain when whole.
CHECKED = frozenset(OPERATIONS[tag] for tag in RESULTS | {0x60, 0x63})
#: resultCode values RFC 4511 defines (0-80 with gaps, plus the cancel/assertion extensions).
RESULT_CODES = frozenset(range(0, 81)) | frozenset(range(118, 124)) | {4096}


def _op_fields(data: bytes, op: ber.TLV) -> dict[str, str] | None:
    """Check the first fields of the common operations; metadata or None."""
    tag, off = op.tag, op.start
    if tag == 0x60:
        version = ber.small_int(data, off, ber.INTEGER)
        if version is None or not 1 <= version[0] <= 3:
            return None
        name = ber.tlv(data, version[1])
        if name is None or name.tag != ber.OCTET_STRING:
            return None
        auth = ber.tlv(data, name.end, partial=True)
        if auth is None or auth.tag not in (0x80, 0xA3):
            return None
        return {"bind_dn": data[name.start:name.end].decode("latin-1")[:256],
                "auth": "simple" if auth.tag == 0x80 else "sasl"}
    if tag in RESULTS:
        code = ber.tlv(data, off)
        if code is None or code.tag != ber.ENUMERATED or not 1 <= code.length <= 2:
            return None
        value = int.from_bytes(data[code.start:code.end], "big")
        matched = ber.tlv(data, code.end, partial=True)
        if value not in RESULT_CODES or matched is None or matched.tag != ber.OCTET_STRING:
            return None
        return {"result_code": str(value)}
    if tag == 0x63:
        base = ber.tlv(data, off)
        if base is None or base.tag != ber.OCTET_STRING:
            return None
        scope = ber.small_int(data, base.end, ber.ENUMERATED)
        deref = ber.small_int(data, scope[1], ber.ENUMERATED) if scope else None
        if scope is None or deref is None or scope[0] > 3 or deref[0] > 3:
            return None
        return {"base": data[base.start:base.end].decode("latin-1")[:256]}
    if tag == 0x42:
        return {} if op.length == 0 else None
    if tag == 0x50:
        return {} if 1 <= op.length <= 4 else None
    if tag == 0x4A:
        return {}  # delRequest: the DN itself
    first = ber.tlv(data, off, partial=True)
    if tag == 0x77:
        return {} if first is not None and first.tag == 0x80 else None
    if tag in (0x64, 0x66, 0x68, 0x6C, 0x6E):
        return {} if first is not None and first.tag == ber.OCTET_STRING else None
    return {} if first is not None else None


def message(data: bytes) -> dict[str, str] | None:
    """Operation and fields of the LDAPMessage at the start of ``data``, or None."""
    outer = ber.tlv(data, 0, partial=True)
    if outer is None or outer.tag != ber.SEQUENCE or outer.length < 5:
        return None
    msg_id = ber.integer(data, outer.start)
    if msg_id is None:
        return None
    op = ber.tlv(data, msg_id[1], partial=True)
    if op is None or op.tag not in OPERATIONS or op.end > outer.end:
        return None
    fields = _op_fields(data, op)
    if fields is None:
        return None
    # What follows the operation inside the message can only be controls ([0]).
    if op.end < outer.end and op.end < len(data) and data[op.end] != 0xA0:
        return None
    return {"operation": OPERATIONS[op.tag], "message_id": str(msg_id[0]), **fields}


def detect(ctx: Context) -> Verdict | None:
    if ctx.index > 1:
        return None
    meta = message(ctx.payload)
    if meta is None:
        return None
    complete = ber.tlv(ctx.payload, 0) is not None
    return found("LDAP", CERTAIN if complete and meta["operation"] in CHECKED else STRONG, **meta)


HEURISTICS = [
    Heuristic("LDAP", detect, TCP_UDP, starts(b"\x30"), order=40),
]
