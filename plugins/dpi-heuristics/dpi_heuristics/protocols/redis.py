"""Redis (RESP2/RESP3): a client command as an array of bulk strings, or an inline command.

``*<n>\\r\\n`` then ``n`` bulk strings ``$<len>\\r\\n<bytes>\\r\\n``; the first
is the command name.  Every length must agree with the bytes, which is
strong evidence on its own.  Inline commands (``PING\\r\\n``, typed into a
telnet) look like other text protocols (memcached's ``get key`` is the same
line), so they wait for the server's RESP reply (``+PONG``, ``$5``, ``:1``,
``-ERR``...).
"""

from __future__ import annotations

import re

from dpicore import Verdict

from ..base import CERTAIN, LIKELY, MORE, STRONG, TCP_ONLY, Context, Heuristic, found, starts
from ..textproto import first_line, incomplete, printable, verb

#: Common command names (an unknown one with a valid RESP frame still counts, less surely).
COMMANDS = frozenset(b"""
PING ECHO AUTH HELLO SELECT QUIT INFO COMMAND CLIENT CONFIG DBSIZE FLUSHDB FLUSHALL SAVE BGSAVE TIME MONITOR
GET SET SETEX SETNX PSETEX MGET MSET GETSET GETDEL GETEX APPEND STRLEN INCR INCRBY INCRBYFLOAT DECR DECRBY
DEL UNLINK EXISTS EXPIRE PEXPIRE EXPIREAT TTL PTTL PERSIST TYPE KEYS SCAN RENAME DUMP RESTORE OBJECT MEMORY
HGET HSET HMSET HMGET HGETALL HDEL HEXISTS HINCRBY HKEYS HVALS HLEN HSCAN
LPUSH RPUSH LPOP RPOP LRANGE LLEN LINDEX LSET LREM LTRIM BLPOP BRPOP LMOVE BLMOVE RPOPLPUSH
SADD SREM SMEMBERS SISMEMBER SCARD SPOP SRANDMEMBER SINTER SUNION SDIFF SSCAN SINTERSTORE
ZADD ZREM ZRANGE ZRANGEBYSCORE ZREVRANGE ZSCORE ZCARD ZINCRBY ZRANK ZSCAN ZCOUNT
XADD XREAD XREADGROUP XRANGE XLEN XACK XGROUP XINFO
PUBLISH SUBSCRIBE PSUBSCRIBE UNSUBSCRIBE MULTI EXEC DISCARD WATCH EVAL EVALSHA SCRIPT FUNCTION FCALL
CLUSTER READONLY REPLICAOF SLAVEOF SYNC PSYNC REPLCONF WAIT ACL SLOWLOG LATENCY MODULE SHUTDOWN
""".split())
#: Inline commands worth waiting on: Redis-only words (memcached's get/set/incr, FTP's TYPE, the
#: mail protocols' AUTH would be ambiguous).  Only PING is common enough to guess on alone.
INLINE = frozenset(b"""
PING ECHO HELLO KEYS EXISTS EXPIRE TTL PTTL DBSIZE FLUSHALL FLUSHDB CONFIG CLIENT COMMAND SCAN MGET MSET SETEX
SETNX INCRBY DECRBY HGET HSET HMSET HGETALL HDEL LPUSH RPUSH LPOP RPOP LRANGE LLEN SADD SREM SMEMBERS ZADD
ZRANGE ZSCORE PUBLISH SUBSCRIBE PSUBSCRIBE MULTI EXEC SLAVEOF REPLICAOF
""".split())
_COMMAND_NAME = re.compile(rb"^[A-Za-z][A-Za-z0-9_.|-]{0,63}$")
#: A RESP reply line: simple string, error, integer, bulk or array length, RESP3 null/boolean/map/double.
_REPLY = re.compile(rb"^(\+[^\r\n]*|-[A-Z]+(?:[ A-Za-z0-9][^\r\n]*)?|[:$*]-?\d+|_|#[tf]|%\d+|,[^\r\n]+)\r\n")
MAX_ARGS = 1 << 20
MAX_BULK = 512 * 1024 * 1024


def _number(data: bytes, off: int, sigil: int) -> tuple[int, int] | None | object:
    """(value, offset after CRLF) of ``<sigil><digits>\\r\\n`` at ``off``; MORE when cut short."""
    if off >= len(data):
        return MORE
    if data[off] != sigil:
        return None
    end = data.find(b"\r\n", off + 1, off + 14)
    if end < 0:
        tail = data[off + 1:].rstrip(b"\r")
        return MORE if len(tail) < 12 and (not tail or tail.isdigit()) else None
    digits = data[off + 1:end]
    if not digits.isdigit() or (len(digits) > 1 and digits[0] == ord("0")):
        return None
    return int(digits), end + 2


def command(data: bytes) -> tuple[bytes, int] | None | object:
    """(command name, argument count) of a RESP array command; MORE when cut before the name is whole."""
    head = _number(data, 0, ord("*"))
    if not isinstance(head, tuple):
        return head
    count, off = head
    if not 1 <= count <= MAX_ARGS:
        return None
    bulk = _number(data, off, ord("$"))
    if not isinstance(bulk, tuple):
        return bulk
    size, off = bulk
    if not 1 <= size <= 64:
        return None
    if off + size + 2 > len(data):
        return MORE
    name = data[off:off + size]
    if data[off + size:off + size + 2] != b"\r\n" or not _COMMAND_NAME.match(name):
        return None
    # The remaining arguments that are in this segment must be well-formed too.
    off += size + 2
    for _ in range(min(count - 1, 64)):
        if off >= len(data):
            break
        bulk = _number(data, off, ord("$"))
        if bulk is MORE:
            break
        if bulk is None:
            return None
        size, off = bulk  # type: ignore[misc]
        if size > MAX_BULK:
            return None
        if off + size + 2 <= len(data) and data[off + size:off + size + 2] != b"\r\n":
            return None
        off += size + 2
    return name.upper(), count


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.stream if ctx.index > 1 else ctx.payload
    memo = ctx.memo.get("Redis")
    if not ctx.from_client:
        if memo is None:
            return None
        return found("Redis", STRONG, command=memo) if _REPLY.match(data) else None
    if data[:1] == b"*":
        parsed = command(data)
        if parsed is MORE:
            return MORE if ctx.index < 4 else None
        if not isinstance(parsed, tuple):
            return None
        name, count = parsed
        known = name in COMMANDS
        return found("Redis", CERTAIN if known else STRONG, command=name.decode("latin-1"), arguments=count - 1)
    line = first_line(data, 4096)
    if line is None:
        return MORE if incomplete(data, ctx.index) else None
    word, _ = verb(line)
    if word not in INLINE or not printable(line) or memo is not None:
        return None
    ctx.memo["Redis"] = word.decode()
    if word == b"PING" and line.upper() == b"PING":
        return ctx.guess(found("Redis", LIKELY, command="PING", inline=True))
    return MORE


HEURISTICS = [
    Heuristic("Redis", detect, TCP_ONLY, starts("*", *sorted(w.decode() for w in INLINE)), order=45),
]
