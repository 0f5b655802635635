"""SMB1 (CIFS) and SMB2/3, over TCP: direct (port 445 framing) and as NetBIOS session messages.

Both transports put a 4-byte header before each SMB message: a zero type
byte and the message length (24 bits for direct TCP, MS-SMB2 §2.1; 17 bits
for a NetBIOS session message, RFC 1002 §4.3.6, which is the same bytes for
any message under 128 KiB).  The message starts with a 4-byte protocol id:
``\\xffSMB`` (SMB1), ``\\xfeSMB`` (SMB2/3), ``\\xfdSMB`` (SMB3 transform: an
encrypted message) or ``\\xfcSMB`` (SMB 3.1.1 compression transform).

The id alone is four magic bytes; the test also wants the framing length to
agree with the header (at least a header's worth, and, for one message in
one segment, exactly the segment) and the header's own fixed fields:
SMB2's StructureSize of 64 and a command in range, SMB1's known command
codes and word/byte counts inside the message, the transform header's
encrypted size.  A flow opened by a session keepalive (0x85) is looked at
again on its next payload.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, MORE, STRONG, TCP_ONLY, Context, Heuristic, found

SMB1, SMB2, TRANSFORM, COMPRESSED = b"\xffSMB", b"\xfeSMB", b"\xfdSMB", b"\xfcSMB"

SMB2_COMMANDS = ("negotiate", "session_setup", "logoff", "tree_connect", "tree_disconnect", "create", "close",
                 "flush", "read", "write", "lock", "ioctl", "cancel", "echo", "query_directory",
                 "change_notify", "query_info", "set_info", "oplock_break")
SMB2_DIALECTS = {0x0202: "2.0.2", 0x0210: "2.1", 0x02FF: "2.???", 0x0300: "3.0", 0x0302: "3.0.2",
                 0x0311: "3.1.1"}
#: SMB1 command codes in use (MS-CIFS §2.2.2.1).
SMB1_COMMANDS = {0x00: "create_directory", 0x01: "delete_directory", 0x02: "open", 0x03: "create",
                 0x04: "close", 0x05: "flush", 0x06: "delete", 0x07: "rename", 0x08: "query_information",
                 0x09: "set_information", 0x0A: "read", 0x0B: "write", 0x0C: "lock_byte_range",
                 0x0D: "unlock_byte_range", 0x0E: "create_temporary", 0x0F: "create_new",
                 0x10: "check_directory", 0x11: "process_exit", 0x12: "seek", 0x13: "lock_and_read",
                 0x14: "write_and_unlock", 0x1A: "read_raw", 0x1B: "read_mpx", 0x1C: "read_mpx_secondary",
                 0x1D: "write_raw", 0x1E: "write_mpx", 0x1F: "write_mpx_secondary", 0x20: "write_complete",
                 0x22: "set_information2", 0x23: "query_information2", 0x24: "locking_andx",
                 0x25: "transaction", 0x26: "transaction_secondary", 0x27: "ioctl", 0x28: "ioctl_secondary",
                 0x29: "copy", 0x2A: "move", 0x2B: "echo", 0x2C: "write_and_close", 0x2D: "open_andx",
                 0x2E: "read_andx", 0x2F: "write_andx", 0x30: "new_file_size", 0x31: "close_and_tree_disc",
                 0x32: "transaction2", 0x33: "transaction2_secondary", 0x34: "find_close2",
                 0x35: "find_notify_close", 0x70: "tree_connect", 0x71: "tree_disconnect", 0x72: "negotiate",
                 0x73: "session_setup_andx", 0x74: "logoff_andx", 0x75: "tree_connect_andx",
                 0x7E: "security_package_andx", 0x80: "query_information_disk", 0x81: "search",
                 0x82: "find", 0x83: "find_unique", 0x84: "find_close", 0xA0: "nt_transact",
                 0xA1: "nt_transact_secondary", 0xA2: "nt_create_andx", 0xA4: "nt_cancel", 0xA5: "nt_rename",
                 0xC0: "open_print_file", 0xC1: "write_print_file", 0xC2: "close_print_file",
                 0xC3: "get_print_queue", 0xD8: "read_bulk", 0xD9: "write_bulk", 0xDA: "write_bulk_data",
                 0xFE: "invalid", 0xFF: "no_andx_command"}
_MIN_SIZE = {SMB1: 35, SMB2: 64, TRANSFORM: 52, COMPRESSED: 16}


def _smb1(msg: bytes, length: int) -> dict[str, object] | None:
    command = msg[4]
    if command not in SMB1_COMMANDS:
        return None
    info: dict[str, object] = {"version": "SMB1", "command": SMB1_COMMANDS[command],
                               "response": bool(msg[9] & 0x80)}
    if len(msg) >= 35:
        end = 33 + 2 * msg[32] + 2  # after the parameter words and the byte count
        if len(msg) >= end:
            (count,) = struct.unpack_from("<H", msg, end - 2)
            if end + count > length and command not in (0x1A, 0x1D):  # raw read/write carry no byte count
                return None
            if command == 0x72 and not info["response"]:
                names = msg[end:end + min(count, 1024)].split(b"\x00")
                info["dialects"] = [n[1:].decode("latin-1") for n in names if n[:1] == b"\x02"]
    return info


def _smb2(msg: bytes) -> dict[str, object] | None:
    structure, _charge, _status, command = struct.unpack_from("<HHIH", msg, 4)
    if structure != 64 or command >= len(SMB2_COMMANDS):
        return None
    (flags,) = struct.unpack_from("<I", msg, 16)
    info: dict[str, object] = {"version": "SMB2", "command": SMB2_COMMANDS[command],
                               "response": bool(flags & 1)}
    if command == 0 and not flags & 1 and len(msg) >= 64 + 36:
        (size, count) = struct.unpack_from("<HH", msg, 64)
        if size == 36 and 0 < count <= 64:
            raw = msg[64 + 36:64 + 36 + 2 * count]
            codes = [c for (c,) in struct.iter_unpack("<H", raw[:len(raw) // 2 * 2])]
            info["dialects"] = [SMB2_DIALECTS.get(c, f"0x{c:04x}") for c in codes]
            if any(c >= 0x0300 for c in codes):
                info["version"] = "SMB3"
    elif command == 0 and flags & 1 and len(msg) >= 64 + 6:
        (size, _mode, dialect) = struct.unpack_from("<HHH", msg, 64)
        if size == 65:
            info["dialect"] = SMB2_DIALECTS.get(dialect, f"0x{dialect:04x}")
            info["version"] = "SMB3" if dialect >= 0x0300 and dialect != 0x02FF else "SMB2"
    return info


def message(data: bytes) -> dict[str, object] | None:
    """What the first framed SMB message in ``data`` says, or None if it is not one."""
    if len(data) < 12 or data[0] != 0:
        return None
    length = int.from_bytes(data[1:4], "big")
    proto = data[4:8]
    minimum = _MIN_SIZE.get(proto)
    if minimum is None or length < minimum:
        return None
    msg = data[4:4 + length]
    if proto == SMB1:
        return _smb1(msg, length) if len(msg) >= 32 else None
    if proto == SMB2:
        return _smb2(msg) if len(msg) >= 20 else None
    if proto == TRANSFORM:
        if len(msg) < 52:
            return None
        (original, _reserved, flags) = struct.unpack_from("<IHH", msg, 36)
        if flags != 1 or original != length - 52:
            return None
        return {"version": "SMB3", "command": "encrypted"}
    if len(msg) < 12:  # the length field claims more than the segment holds
        return None
    (_original, algorithm, flags) = struct.unpack_from("<IHH", msg, 4)
    if algorithm > 4 or flags > 1:
        return None
    return {"version": "SMB3", "command": "compressed"}


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.payload
    if data[:1] == b"\x85":  # NetBIOS keepalive before the first SMB message
        return MORE if data == b"\x85\x00\x00\x00" and ctx.index <= 3 else None
    info = message(data)
    if info is None:
        return None
    length = int.from_bytes(data[1:4], "big")
    # One message filling the segment, or several / a message continued in the next segment.
    confidence = CERTAIN if length + 4 == len(data) or (length + 4 < len(data) and message(
        data[length + 4:]) is not None) else STRONG
    return found("SMB", confidence, **info)


HEURISTICS = [
    Heuristic("SMB", detect, TCP_ONLY, frozenset({0x00, 0x85}), server_first=False, order=18),
]
