"""A minimal reader of ASN.1 BER TLVs (definite lengths only), for LDAP, Kerberos and friends.

Detectors only need to walk a few header fields, so this is not a decoder:
:func:`tlv` reads one tag and length and says where the value starts;
values may run past the end of a first segment (a large message is cut by
TCP), which callers allow or refuse explicitly with ``partial``.
"""

from __future__ import annotations

from typing import NamedTuple

# Universal tags.
BOOLEAN = 0x01
INTEGER = 0x02
OCTET_STRING = 0x04
OID = 0x06
ENUMERATED = 0x0A
SEQUENCE = 0x30
GENERAL_STRING = 0x1B
GENERALIZED_TIME = 0x18


class TLV(NamedTuple):
    tag: int
    #: Offset of the value's first byte.
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


def tlv(data: bytes, off: int = 0, partial: bool = False) -> TLV | None:
    """The TLV at ``off``: single-byte tags, definite lengths of at most 4 length bytes.

    Returns None for malformed headers, and for values running past the end
    of ``data`` unless ``partial`` is set.
    """
    if off + 2 > len(data):
        return None
    tag = data[off]
    if tag & 0x1F == 0x1F:  # multi-byte tag numbers: none of our protocols use them at the top
        return None
    first = data[off + 1]
    if first < 0x80:
        length, start = first, off + 2
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or off + 2 + n > len(data):
            return None  # indefinite length (0x80) is not allowed in DER/LDAP/Kerberos
        length = int.from_bytes(data[off + 2:off + 2 + n], "big")
        start = off + 2 + n
    if not partial and start + length > len(data):
        return None
    return TLV(tag, start, length)


def integer(data: bytes, off: int, max_len: int = 4) -> tuple[int, int] | None:
    """(value, offset after it) of an INTEGER at ``off`` (non-negative, at most ``max_len`` bytes)."""
    t = tlv(data, off)
    if t is None or t.tag != INTEGER or not 1 <= t.length <= max_len:
        return None
    raw = data[t.start:t.end]
    if raw[0] & 0x80:
        return None
    return int.from_bytes(raw, "big"), t.end


def small_int(data: bytes, off: int, tag: int) -> tuple[int, int] | None:
    """(value, offset after) of a one-byte INTEGER or ENUMERATED with tag ``tag`` (e.g. ``02 01 05``)."""
    if off + 3 > len(data) or data[off] != tag or data[off + 1] != 1:
        return None
    return data[off + 2], off + 3


def explicit_int(data: bytes, off: int, context: int) -> tuple[int, int] | None:
    """(value, offset after) of ``[context] INTEGER`` (``a<n> 03 02 01 xx``), as Kerberos writes fields."""
    t = tlv(data, off)
    if t is None or t.tag != 0xA0 | context:
        return None
    inner = integer(data, t.start)
    if inner is None or inner[1] != t.end:
        return None
    return inner[0], t.end
