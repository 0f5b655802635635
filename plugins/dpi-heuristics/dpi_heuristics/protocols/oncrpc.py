"""ONC RPC (RFC 5531) and the services on it: NFS, portmapper, mount, NLM, ... (canonical name "NFS").

A call is a run of XDR words: xid, message type 0, RPC version 2, program,
program version, procedure, then two authenticators (flavor, length of at
most 400, opaque body padded to 4 bytes).  Twelve fixed or bounded words
make a call plain to see, the more so when the program is a known one and an
AUTH_UNIX credential parses to its exact length.  A reply (message type 1)
seen before its call (a capture that began late) is checked by its own
fields (reply status, verifier, accept status) and is only a guess.

Over TCP each message is preceded by a record mark: the last-fragment bit
and a 31-bit fragment length (RFC 5531 §11).
"""

from __future__ import annotations

import struct

from dpicore import Verdict
from dpicore.model import TCP

from ..base import CERTAIN, LIKELY, STRONG, TCP_ONLY, UDP_ONLY, Context, Heuristic, found

PROGRAMS = {100000: "portmapper", 100001: "rstatd", 100002: "rusersd", 100003: "nfs", 100004: "ypserv",
            100005: "mountd", 100007: "ypbind", 100008: "walld", 100009: "yppasswdd", 100011: "rquotad",
            100012: "sprayd", 100021: "nlockmgr", 100024: "status", 100068: "cmsd", 100083: "ttdbserverd",
            100099: "autofs", 100133: "nsm", 100227: "nfs_acl", 100229: "metad", 100232: "sadmind",
            150001: "pcnfsd", 300019: "amd", 390113: "nsrexecd", 395650: "nfs_cb"}
#: AUTH_NONE, AUTH_UNIX, AUTH_SHORT, AUTH_DH, RPCSEC_GSS (6); AUTH_TLS (7).
FLAVORS = frozenset({0, 1, 2, 3, 6, 7})
MAX_AUTH = 400
#: The longest record fragment _message accepts over TCP (the mark's length field has 31 bits).
MAX_FRAGMENT = 1 << 24
#: The first bytes a record mark of at most MAX_FRAGMENT can have: the last-fragment bit, and the length's
#: bit 24 (set only by MAX_FRAGMENT itself).
RECORD_MARK_FIRST_BYTES = frozenset({0x00, 0x01, 0x80, 0x81})


def _auth(data: bytes, off: int) -> tuple[int, int, int] | None:
    """(flavor, body length, offset after) of an opaque_auth at ``off``."""
    if off + 8 > len(data):
        return None
    flavor, length = struct.unpack_from("!II", data, off)
    if flavor not in FLAVORS or length > MAX_AUTH or length % 4 and flavor != 0:
        return None
    if flavor == 0 and length:
        return None
    return flavor, length, off + 8 + ((length + 3) & ~3)


def _auth_unix_ok(body: bytes) -> bool:
    """AUTH_UNIX: stamp, machine name (string), uid, gid, up to 16 gids, filling the body exactly."""
    if len(body) < 20:
        return False
    (name_len,) = struct.unpack_from("!I", body, 4)
    off = 8 + ((name_len + 3) & ~3)
    if name_len > 255 or off + 12 > len(body):
        return False
    (gids,) = struct.unpack_from("!I", body, off + 8)
    return gids <= 16 and off + 12 + 4 * gids == len(body)


def call(msg: bytes) -> dict[str, object] | None:
    if len(msg) < 40:
        return None
    _xid, mtype, rpcvers, prog, vers, proc = struct.unpack_from("!6I", msg)
    if mtype != 0 or rpcvers != 2 or vers > 64 or proc > 1024:
        return None
    cred = _auth(msg, 24)
    verf = _auth(msg, cred[2]) if cred else None
    if cred is None or verf is None or verf[2] > len(msg) or verf[0] == 1:
        return None
    if cred[0] == 1 and not _auth_unix_ok(msg[32:32 + cred[1]]):
        return None
    return {"program": PROGRAMS.get(prog, str(prog)), "program_version": vers, "procedure": proc,
            "known": prog in PROGRAMS}


def reply(msg: bytes) -> bool:
    """An accepted or denied reply."""
    if len(msg) < 24:
        return False
    _xid, mtype, stat = struct.unpack_from("!III", msg)
    if mtype != 1 or stat > 1:
        return False
    if stat == 1:  # denied: RPC_MISMATCH (low, high) or AUTH_ERROR (auth_stat)
        return struct.unpack_from("!I", msg, 12)[0] <= 1
    verf = _auth(msg, 12)
    return verf is not None and verf[2] + 4 <= len(msg) and struct.unpack_from("!I", msg, verf[2])[0] <= 5


def _message(ctx: Context) -> bytes | None:
    data = ctx.payload
    if ctx.transport != TCP:
        return data
    if len(data) < 8:
        return None
    (mark,) = struct.unpack_from("!I", data)
    length = mark & 0x7FFFFFFF
    if length < 24 or length > MAX_FRAGMENT:
        return None
    return data[4:4 + length]


def detect(ctx: Context) -> Verdict | None | object:
    msg = _message(ctx)
    if msg is None:
        return None
    info = call(msg)
    if info is not None:
        known = info.pop("known")
        return found("NFS", CERTAIN if known else STRONG, message="call", **info)
    # A reply without its call (the capture began late) is thin evidence: a guess, and the call may follow.
    if ctx.index > 2 or not reply(msg):
        return None
    return ctx.guess(found("NFS", LIKELY, message="reply"))


HEURISTICS = [
    # Over UDP the first bytes are a random xid.  Over TCP they are a record mark, whose length _message
    # caps at 1 << 24: its first byte is the last-fragment bit and at most the length's 25th bit.
    Heuristic("NFS", detect, UDP_ONLY, None, server_first=False, order=44),
    Heuristic("NFS", detect, TCP_ONLY, RECORD_MARK_FIRST_BYTES, server_first=False, order=44),
]
