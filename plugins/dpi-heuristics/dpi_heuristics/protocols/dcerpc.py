"""DCE/RPC (MS-RPCE, C706): connection-oriented v5 over TCP, connectionless v4 over UDP.

Connection-oriented PDUs start with a 16-byte header: version 5, minor
version 0 or 1, a packet type (0-19), flags, a 4-byte data representation
(integer/character byte 0x10 or 0x00, floating point 0-3, two zero bytes),
the fragment length in that byte order, the authentication length and the
call id.  The fragment length must hold the header and the authentication
data, and must agree with the segment (a segment holds whole fragments,
or the start of one).  A bind names the interface (an UUID) in its first
presentation context, which goes into the metadata.

Connectionless PDUs have an 80-byte header: version 4, a packet type 0-10,
the same data representation, three UUIDs, and a body length at offset 74
that must match the datagram exactly.
"""

from __future__ import annotations

import struct
import uuid

from dpicore import Verdict
from dpicore.model import TCP

from ..base import CERTAIN, STRONG, TCP_UDP, Context, Heuristic, found

CO_TYPES = {0: "request", 1: "ping", 2: "response", 3: "fault", 4: "working", 5: "nocall", 6: "reject",
            7: "ack", 8: "cl_cancel", 9: "fack", 10: "cancel_ack", 11: "bind", 12: "bind_ack",
            13: "bind_nak", 14: "alter_context", 15: "alter_context_resp", 16: "auth3", 17: "shutdown",
            18: "co_cancel", 19: "orphaned"}
#: Packet types a connection-oriented peer sends (C706 §12.6.4); 1 and 4-10 are connectionless only.
CO_ONLY = frozenset({0, 2, 3, 11, 12, 13, 14, 15, 16, 17, 18, 19})
#: Minimum fragment length per connection-oriented type (header plus fixed body).
CO_MIN = {0: 24, 2: 24, 3: 32, 11: 28, 12: 28, 13: 18, 14: 28, 15: 28}
INTERFACES = {
    "e1af8308-5d1f-11c9-91a4-08002b14a0fa": "epmapper", "12345778-1234-abcd-ef00-0123456789ab": "lsarpc",
    "12345778-1234-abcd-ef00-0123456789ac": "samr", "4b324fc8-1670-01d3-1278-5a47bf6ee188": "srvsvc",
    "6bffd098-a112-3610-9833-46c3f87e345a": "wkssvc", "367abb81-9844-35f1-ad32-98f038001003": "svcctl",
    "338cd001-2244-31f1-aaaa-900038001003": "winreg", "e3514235-4b06-11d1-ab04-00c04fc2dcd2": "drsuapi",
    "12345678-1234-abcd-ef00-01234567cffb": "netlogon",
    "99fcfec4-5260-101b-bbcb-00aa0021347a": "IObjectExporter",
    "000001a0-0000-0000-c000-000000000046": "IRemoteSCMActivator",
    "86d35949-83c9-4044-b424-db363231fd0c": "ITaskSchedulerService",
    "dea00001-6c97-11d1-8271-00a02442df7d": "pnio-device",
}


def _interface(raw: bytes, little: bool) -> str:
    name = str(uuid.UUID(bytes_le=bytes(raw)) if little else uuid.UUID(bytes=bytes(raw)))
    return INTERFACES.get(name, name)


def _drep_ok(drep: bytes) -> bool:
    return drep[0] in (0x00, 0x10) and drep[1] <= 3 and drep[2] == 0 and drep[3] == 0


def _co_fragment(data: bytes) -> int | None:
    """The fragment length of a well-formed connection-oriented header at the start of ``data``."""
    if len(data) < 16 or data[0] != 5 or data[1] > 1 or data[2] not in CO_ONLY or not _drep_ok(data[4:8]):
        return None
    frag, auth = struct.unpack_from("<HH" if data[4] == 0x10 else ">HH", data, 8)
    if frag < CO_MIN.get(data[2], 16) or (auth and auth + 8 + 16 > frag):
        return None
    return frag


def connection_oriented(data: bytes) -> dict[str, object] | None:
    frag = _co_fragment(data)
    if frag is None:
        return None
    if len(data) - frag >= 16 and _co_fragment(data[frag:]) is None:
        return None  # what follows the fragment in the segment must be another fragment
    order = "<" if data[4] == 0x10 else ">"
    info: dict[str, object] = {"version": "5.%d" % data[1], "packet_type": CO_TYPES[data[2]]}
    if data[2] in (11, 14) and len(data) >= 28 + 4 + 20:
        (n_ctx,) = struct.unpack_from("B", data, 24)
        if n_ctx:
            info["interface"] = _interface(data[32:48], order == "<")
    return info


def connectionless(data: bytes) -> dict[str, object] | None:
    if len(data) < 80 or data[0] != 4 or data[1] > 10 or not _drep_ok(data[4:7] + b"\x00"):
        return None
    order = "<" if data[4] == 0x10 else ">"
    (length,) = struct.unpack_from(order + "H", data, 74)
    if 80 + length != len(data) and not (data[78] and 80 + length < len(data)):  # auth trailer follows the body
        return None
    if data[2] & 0x01 or data[3] & 0xFC:  # reserved flag bits
        return None
    return {"version": "4", "packet_type": CO_TYPES[data[1]], "interface": _interface(data[24:40], order == "<")}


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    if ctx.transport == TCP:
        info = connection_oriented(data)
        if info is None:
            return None
        (frag,) = struct.unpack_from("<H" if data[4] == 0x10 else ">H", data, 8)
        return found("DCERPC", CERTAIN if frag == len(data) else STRONG, **info)
    info = connectionless(data)
    return None if info is None else found("DCERPC", CERTAIN, **info)


HEURISTICS = [
    Heuristic("DCERPC", detect, TCP_UDP, frozenset({4, 5}), server_first=False, order=26),
]
