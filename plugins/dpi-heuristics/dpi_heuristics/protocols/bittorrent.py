"""BitTorrent: the peer wire handshake (BEP 3), the DHT (BEP 5), the UDP tracker
protocol (BEP 15), uTP (BEP 29) and local service discovery (BEP 14).

* TCP: ``\\x13BitTorrent protocol``, 8 reserved bytes, info hash and peer ID;
* DHT: a bencoded dictionary that parses to its last byte, with a
  transaction ID and a message type ``y`` of ``q``, ``r`` or ``e``;
* UDP tracker: a 16-byte connect request carrying the protocol's magic;
* uTP: a 20-byte ST_SYN answered by an ST_STATE with the same connection
  ID that acknowledges the SYN's sequence number;
* LSD: an HTTP-like ``BT-SEARCH * HTTP/1.1`` datagram.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from dpicore import Verdict
from dpicore.model import TCP

from ..base import CERTAIN, MORE, STRONG, TCP_UDP, Context, Heuristic, found

HANDSHAKE = b"\x13BitTorrent protocol"
TRACKER_MAGIC = 0x41727101980
LSD = b"BT-SEARCH * HTTP/1.1\r\n"
UTP_SYN, UTP_STATE = 0x41, 0x21
MAX_DEPTH = 16


#: A bencoded integer's digits: one optional minus sign (``--1`` is no integer; int() would raise).
_INTEGER = re.compile(rb"-?[0-9]+")


class _BadBencode(Exception):
    pass


def _bdecode(data: bytes, off: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH or off >= len(data):
        raise _BadBencode
    c = data[off]
    if c == ord("i"):
        end = data.find(b"e", off + 1, off + 24)
        if end < 0:
            raise _BadBencode
        digits = data[off + 1:end]
        if not _INTEGER.fullmatch(digits):
            raise _BadBencode
        return int(digits), end + 1
    if c in (ord("l"), ord("d")):
        items: list[Any] = []
        off += 1
        while True:
            if off >= len(data):
                raise _BadBencode
            if data[off] == ord("e"):
                off += 1
                break
            value, off = _bdecode(data, off, depth + 1)
            items.append(value)
        if c == ord("l"):
            return items, off
        if len(items) % 2 or not all(isinstance(k, bytes) for k in items[::2]):
            raise _BadBencode
        return dict(zip(items[::2], items[1::2])), off
    if ord("0") <= c <= ord("9"):
        colon = data.find(b":", off, off + 8)
        if colon < 0 or not data[off:colon].isdigit():
            raise _BadBencode
        n = int(data[off:colon])
        end = colon + 1 + n
        if end > len(data):
            raise _BadBencode
        return data[colon + 1:end], end
    raise _BadBencode


def bdecode(data: bytes) -> Any | None:
    """The bencoded value filling ``data`` exactly, or None."""
    try:
        value, end = _bdecode(data, 0, 0)
    except _BadBencode:
        return None
    return value if end == len(data) else None


def _peer_handshake(data: bytes) -> Verdict | None | object:
    if len(data) < len(HANDSHAKE):
        return MORE if HANDSHAKE.startswith(data) else None
    if not data.startswith(HANDSHAKE):
        return None
    info_hash = data[28:48].hex() if len(data) >= 48 else None
    peer = data[48:56] if len(data) >= 56 else b""
    client = peer.decode("latin-1") if peer[:1] == b"-" and peer[7:8] == b"-" else None
    return found("BitTorrent", CERTAIN, message="handshake", info_hash=info_hash, client=client)


def _udp(ctx: Context) -> Verdict | None | object:
    data = ctx.payload
    if data[:1] == b"d":
        msg = bdecode(data)
        if isinstance(msg, dict) and msg.get(b"y") in (b"q", b"r", b"e") and b"t" in msg:
            query = msg.get(b"q")
            return found("BitTorrent", CERTAIN, message="dht",
                         query=query.decode("latin-1") if isinstance(query, bytes) else None)
        return None
    if data.startswith(LSD):
        return found("BitTorrent", CERTAIN, message="lsd")
    if len(data) == 16 and struct.unpack_from("!QI", data) == (TRACKER_MAGIC, 0):
        return found("BitTorrent", CERTAIN, message="udp-tracker-connect")
    if len(data) >= 20 and data[1] <= 2:
        conn_id, = struct.unpack_from("!H", data, 2)
        seq, ack = struct.unpack_from("!HH", data, 16)
        if data[0] == UTP_SYN and ctx.from_client and ctx.index == 1 and len(data) == 20:
            ctx.memo["uTP"] = (conn_id, seq)
            return MORE
        syn = ctx.memo.get("uTP")
        if data[0] == UTP_STATE and syn is not None and not ctx.from_client and (conn_id, ack) == syn:
            return found("BitTorrent", STRONG, message="utp")
    return None


def detect(ctx: Context) -> Verdict | None | object:
    if ctx.transport == TCP:
        return _peer_handshake(ctx.stream if ctx.index > 1 else ctx.payload)
    return _udp(ctx)


HEURISTICS = [
    Heuristic("BitTorrent", detect, TCP_UDP, frozenset({0x13, ord("d"), ord("B"), 0x00, UTP_SYN, UTP_STATE}),
              server_first=False, order=25),
]
