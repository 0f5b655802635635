"""Captures in batches, with the common headers decoded for a whole batch at once.

A CPython loop that reads a packet's header fields costs several
microseconds; numpy gathers the same fields for thousands of packets in one
call, and the same decode compiled from ``cheaders.pyx`` (used when it was
built) does it in one pass per frame.  Only the common case is decoded here — Ethernet (with 802.1Q/QinQ),
Linux cooked, raw IP or loopback framing around an unfragmented IPv4 TCP or
UDP packet, or an IPv6 one without extension headers, with its headers
captured — and every other frame is marked for
the scalar decoder (:mod:`dpicore.decode.packets`), which stays the
reference: a frame is either decoded here with the same result, or not at all.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from typing import Callable, Iterator

import attrs
import numpy as np

from .capture import (MAX_RECORD, PCAP_MAGICS, CaptureError, CaptureReader, Frame, Interface, PcapngBlocks, Skip,
                      pipe_wait)
from .packets import (DLT_EN10MB, DLT_IPV4, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_LOOP, DLT_NULL, DLT_RAW,
                      DLT_RAW_OLD, DLT_RAW_OPENBSD)
from .walks import SharedWalks

walk_pcap: Callable[[bytes, bool], tuple[np.ndarray, int]] | None
walk_pcapng: Callable[[bytes, int, bool, int], tuple[np.ndarray, int]] | None
try:  # the record walks in C (cwalk.pyx), when scripts/compile_core.py built it for the source there now
    from .cwalk import walk_pcap, walk_pcapng
except ImportError:  # no compiler at install, DPI_PURE_PYTHON, or the .pyx edited since: _walk, _walk_pcapng
    walk_pcap = walk_pcapng = None
decode_c: Callable[[bytes, np.ndarray, np.ndarray, int], tuple[np.ndarray, ...]] | None
try:  # the header decode in C (cheaders.pyx), likewise
    from .cheaders import decode as decode_c
except ImportError:  # decode_numpy
    decode_c = None

BATCH = 8192
CHUNK = 4 << 20

TCP, UDP = 6, 17


@attrs.define(slots=True)
class Batch:
    """Consecutive frames of one link type, stored back to back in ``buf``."""

    linktype: int
    buf: bytes
    off: np.ndarray    # int64: start of each frame in buf
    cap: np.ndarray    # int64: captured length
    wire: np.ndarray   # int64: original length
    ts: np.ndarray     # float64
    first: int         # 1-based number of the first frame in the file

    def __len__(self) -> int:
        return len(self.off)

    def frame(self, i: int) -> bytes:
        o = int(self.off[i])
        return self.buf[o:o + int(self.cap[i])]


def batches(path: str, size: int = BATCH, walks: SharedWalks | None = None, skip: Skip | None = None
            ) -> Iterator[Batch]:
    """Batches of a capture file.  Damage raises :class:`CaptureError` after every
    complete frame before it was yielded (the same messages as CaptureReader).
    ``walks``: record walks shared with other processes reading the same file (a pcap file, not a pipe);
    ``skip``: told of each damaged pcapng packet block skipped (see PcapngBlocks; None: it ends the file)."""
    reader = CaptureReader(path, skip)  # validates the file the same way the frame path does
    try:
        # From a pipe (tcpdump -w - | dpi classify /dev/stdin) a batch is what has arrived, not a whole
        # chunk: a slow capture must not wait for 4 MB before its first flow is classified.
        more = reader.more_within if reader.pipe else None
        rewind = not reader.pipe and reader._fh is reader._base  # a plain file, not gzip (see _next_chunk)
        if reader.format == "pcap":
            yield from _pcap_batches(path, reader._fh, size, more=more, walks=None if reader.pipe else walks,
                                     rewind=rewind)
        else:
            yield from _pcapng_batches(path, reader._fh, size, more=more, skip=skip, rewind=rewind)
    finally:
        reader.close()


def _pcap_batches(path: str, fh, size: int,  # type: ignore[no-untyped-def]
                  more: Callable[[float], bool] | None = None, walks: SharedWalks | None = None,
                  rewind: bool = False) -> Iterator[Batch]:
    """Batches of a pcap file, read in chunks of CHUNK bytes (:func:`_next_chunk`)."""
    order, unit = PCAP_MAGICS[fh.read(4)]
    rest = fh.read(20)
    if len(rest) < 20:
        raise CaptureError(path, "file header cut short")
    linktype = struct.unpack(order + "I", rest[16:20])[0] & 0xFFFF
    unpack = struct.Struct(order + "IIII").unpack_from
    caplen = struct.Struct(order + "8xI").unpack_from  # a record's captured length, from its start
    header = np.dtype(order + "u4")
    buf = b""
    pos = 0
    number = 0
    chunk = 0
    eof = False
    while not eof:
        buf, eof, broken = _next_chunk(fh, buf, pos, rewind, more)
        n = len(buf)
        limit = n - 16
        # The walk is a function of buf alone, and every process reading the file makes the same bufs:
        # another's walk of this chunk is used if it is the walk of these bytes.
        shared = walks.take(chunk) if walks is not None else None
        found = checked_walk(buf, shared, header, unit, caplen) if shared is not None else None
        if found is None:
            starts, pos = _walk(buf, caplen) if walk_pcap is None else walk_pcap(buf, order == ">")
            if walks is not None:
                walks.give(chunk, starts)
            records = _records(buf, starts, header, unit)
        else:
            records, pos = found
        chunk += 1
        count = len(records[0])
        bad = np.flatnonzero(records[1] > MAX_RECORD)
        stopped = caplen(buf, pos)[0] if pos <= limit else 0  # the length the walk stopped at
        if len(bad) or stopped > MAX_RECORD:
            k = int(bad[0]) if len(bad) else count
            cap = int(records[1][k]) if len(bad) else stopped
            yield from _emit(linktype, buf, [a[:k] for a in records], number + 1, size)
            raise CaptureError(path, f"corrupt record (captured length {cap})", number + k + 1)
        yield from _emit(linktype, buf, records, number + 1, size)
        number += count
        if broken is not None:  # after every record complete before the break
            raise CaptureError(path, f"unreadable data: {broken}", number + 1)
        if eof and pos < n:
            if n - pos < 16:
                raise CaptureError(path, "capture cut short inside a record header", number + 1)
            cap = unpack(buf, pos)[2]
            raise CaptureError(path, f"capture cut short: packet has {n - pos - 16} of {cap} bytes", number + 1)


def _walk(buf: bytes, caplen: Callable[[bytes, int], tuple[int]]) -> tuple[list[int], int]:
    """(the start of every record that lies whole in ``buf``, from its start; where the walk stopped).
    The same walk in C (``cwalk.walk_pcap``) replaces this one when it was built.
    ``caplen`` reads a record's captured length given the record's start (the struct skips the times:
    an addition less per record, a tenth of the loop).

    Only the walk from record to record is a Python loop (it reads one length per record); numpy
    reads the record headers found.  The loop does not test each length against MAX_RECORD (that
    test was a third of its time): a corrupt length that still fits in the buffer walks on through
    garbage, so the lengths found are tested at once afterwards and nothing from the first corrupt
    record on is emitted.
    """
    starts: list[int] = []
    found = starts.append
    n = len(buf)
    limit = n - 16
    pos = 0
    while pos <= limit:
        end = pos + 16 + caplen(buf, pos)[0]
        if end > n:
            break
        found(pos)
        pos = end
    return starts, pos


def checked_walk(buf: bytes, starts: np.ndarray, header: np.dtype, unit: float,
                 caplen: Callable[[bytes, int], tuple[int]]) -> tuple[list[np.ndarray], int] | None:
    """(:func:`_records` of ``starts``, where the walk stopped) if ``starts`` is what :func:`_walk`
    finds in ``buf``, else None: the check, in numpy, of a walk another process left (SharedWalks)."""
    n = len(buf)
    if not len(starts):
        pos, records = 0, _records(buf, starts, header, unit)
    else:
        if starts[0] != 0 or starts[-1] > n - 16 or not (starts[1:] > starts[:-1]).all():
            return None
        records = _records(buf, starts, header, unit)  # every header lies in buf
        cap = records[1]
        if not (starts[1:] == starts[:-1] + 16 + cap[:-1]).all():
            return None
        pos = int(starts[-1]) + 16 + int(cap[-1])
        if pos > n:
            return None
    if pos <= n - 16 and pos + 16 + caplen(buf, pos)[0] <= n:  # the walk would have gone on
        return None
    return records, pos


def _read(fh, size: int, more: Callable[[float], bool] | None = None  # type: ignore[no-untyped-def]
          ) -> tuple[bytes, Exception | None]:
    """Up to ``size`` bytes, and the error that stopped the reading early (else None).  From a pipe
    (``more``: whether more arrives within so many seconds) what has arrived: a slow capture must not
    wait for 4 MB before its first flows are classified, nor a trickle make a batch per record.

    A gzip file that breaks off raises from inside a read: reading piece by
    piece (``read1``) keeps what was decompressed before the break, so the
    records in it are still classified, as the frame-by-frame reader does.
    """
    pieces: list[bytes] = []
    got = 0
    first = 0.0
    try:
        while got < size:
            piece = fh.read1(size - got)
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
            if more is not None:  # a pipe: what arrives until it pauses or the first piece is old (pipe_wait)
                now = time.monotonic()
                first = first or now
                wait = pipe_wait(now - first)
                if not wait or not more(wait):
                    break
    except (OSError, EOFError, zlib.error) as exc:
        return b"".join(pieces), exc
    return b"".join(pieces), None


def _next_chunk(fh, buf: bytes, pos: int, rewind: bool,  # type: ignore[no-untyped-def]
                more: Callable[[float], bool] | None) -> tuple[bytes, bool, Exception | None]:
    """(the next chunk to walk, whether the capture ended, the error that stopped the reading early):
    ``buf`` from ``pos`` on (a record or block the previous chunk ended inside), then up to CHUNK more bytes.

    ``rewind``: ``fh`` is a plain file that seeks cheaply.  The unfinished record is then read again
    from its start with the next chunk, instead of copied in front of it: one fresh buffer per chunk
    rather than two, and the memory of the one before is reused as it is freed (joining them cost a
    copy of each chunk and a page fault per 4 KB of the file, a tenth of a run's time on the shared
    captures).  A record longer than the chunk (``pos`` 0: the walk did not move), a pipe and gzip
    are joined.
    """
    if rewind and pos:
        fh.seek(pos - len(buf), io.SEEK_CUR)
        buf = b""
    data, broken = _read(fh, CHUNK, more)
    return (buf[pos:] + data if buf else data), not data or broken is not None, broken


def _items(b: np.ndarray, width: int) -> np.ndarray:
    """Every ``width`` consecutive bytes of ``b`` as one item (a read-only view, not a copy)."""
    return np.ndarray(shape=(max(len(b) - width + 1, 0),), dtype=np.dtype(f"V{width}"), buffer=b, strides=(1,))


def _records(buf: bytes, starts: list[int] | np.ndarray, header: np.dtype, unit: float) -> list[np.ndarray]:
    """[frame offsets, captured lengths, original lengths, times] of the records whose 16-byte headers
    start at ``starts`` in ``buf`` (the lengths as the file says, before any check)."""
    pos = np.asarray(starts, dtype=np.int64)
    fields = _items(np.frombuffer(buf, dtype=np.uint8), 16)[pos].view(header).reshape(-1, 4).astype(np.int64)
    cap = fields[:, 2]
    ts = fields[:, 0].astype(np.float64) + fields[:, 1].astype(np.float64) * unit
    return [pos + 16, cap, np.maximum(fields[:, 3], cap), ts]


def _emit(linktype: int, buf: bytes, records: list[np.ndarray], first: int, size: int) -> Iterator[Batch]:
    """Batches of :func:`_records`' records."""
    off, cap, wire, ts = records
    for s in range(0, len(off), size):
        e = s + size
        yield Batch(linktype, buf, off[s:e], cap[s:e], wire[s:e], ts[s:e], first + s)


def _pcapng_batches(path: str, fh, size: int,  # type: ignore[no-untyped-def]
                    more: Callable[[float], bool] | None = None, skip: Skip | None = None,
                    rewind: bool = False) -> Iterator[Batch]:
    """Batches of a pcapng capture, read in chunks as :func:`_pcap_batches` reads a pcap (from a pipe,
    ``more``, a chunk is what has arrived; from a plain file, ``rewind``, the block a chunk ends inside
    is read again with the next chunk).

    A Python step per block walks from one enhanced packet block to the next
    (:func:`_walk_pcapng`), over the blocks that carry no packet and change
    nothing (statistics, name resolution, custom blocks), and numpy reads the
    fields of the packet blocks found (:class:`_Run`).  The other blocks
    (section and interface headers, the rare simple and obsolete packet
    blocks), and a block the checks find damaged, go to the frame-by-frame
    reader's :class:`~dpicore.decode.capture.PcapngBlocks`: one reading of
    such blocks, and the same messages and packet numbers for damage.  A
    block that does not lie whole in the chunk yet (the walk stops there, and
    PcapngBlocks' read comes up short) is read again with more bytes.
    """
    run = _Run(skip)
    blocks = PcapngBlocks(path, run.skip if skip is not None else None)
    buf, pos, eof = b"", 0, False
    broken: Exception | None = None
    while True:
        if walk_pcapng is None:
            found, pos = _walk_pcapng(buf, pos, blocks.header)
        else:
            starts, pos = walk_pcapng(buf, pos, blocks.order == ">", MAX_RECORD)
            found = starts.tolist()
        run.walked(blocks, found)
        n = len(buf)
        if pos == n and eof:
            yield from run.batches(blocks, buf, size)
            if broken is not None:  # after every block complete before the break
                raise CaptureError(path, f"unreadable data: {broken}", blocks.number + 1)
            return
        if pos < n:  # a block the walk does not take, or one not whole in buf yet
            btype = blocks.header(buf, pos)[0] if n - pos >= 8 else -1
            if btype not in (2, 3):  # a section or interface header: the run's packets name the interfaces before it
                yield from run.batches(blocks, buf, size)
            rest = io.BytesIO(buf)
            rest.seek(pos)

            def read(k: int) -> bytes:
                """The buffer's next ``k`` bytes; short of them, more bytes first (_More), or at the end of
                the capture what there is; past a break of the stream, the error the frame reader's read
                raises there."""
                got = rest.read(k)
                if len(got) < k:
                    if broken is not None:
                        raise CaptureError(path, f"unreadable data: {broken}", blocks.number + 1)
                    if not eof:
                        raise _More
                return got

            try:
                frame = blocks.block(read)
            except _More:  # PcapngBlocks changes nothing before its reads are done
                pass
            except CaptureError:
                yield from run.batches(blocks, buf, size)  # the frames before the damage (or an earlier damage)
                raise
            else:
                assert not blocks.ended  # pos < n
                if frame is not None:
                    run.read(blocks, pos + (28 if btype == 2 else 12), frame)
                pos = rest.tell()
                continue
        yield from run.batches(blocks, buf, size)  # buf is about to be replaced
        buf, eof, broken = _next_chunk(fh, buf, pos, rewind, more)
        pos = 0


class _More(Exception):
    """The block being read does not lie whole in the chunk: read more of the capture first."""


#: pcapng blocks the walk hands to PcapngBlocks: they change what the packets after them mean (section and
#: interface headers) or are read there (simple and obsolete packet blocks, and an enhanced one too short
#: for its fields).
_NOT_WALKED = frozenset({0x0A0D0D0A, 1, 2, 3, 6})


def _walk_pcapng(buf: bytes, pos: int, header: Callable[[bytes, int], tuple[int, int]]) -> tuple[list[int], int]:
    """(the start of every enhanced packet block from ``pos`` on that lies whole in ``buf`` and is long
    enough for its fields; where the walk stopped).  A block that carries no packet and changes nothing
    is stepped over when its length is sound (as PcapngBlocks.block checks it); as in :func:`_walk`, the
    rest of each packet block's checks come after, in numpy.  The same walk in C (``cwalk.walk_pcapng``)
    replaces this one when it was built."""
    starts: list[int] = []
    found = starts.append
    n = len(buf)
    limit = n - 28
    while pos <= limit:
        btype, length = header(buf, pos)
        end = pos + length
        if btype == 6 and length >= 28 and end <= n:
            found(pos)
        elif btype in _NOT_WALKED or length < 12 or length % 4 or length > MAX_RECORD or end > n:
            break
        pos = end
    return starts, pos


class _Run:
    """The packets of a pcapng file read since the last batch, in order (each has its place, its number
    the run's first plus its place): where each block starts in the buffer, the frames PcapngBlocks
    read (simple and obsolete packet blocks) and the packets it skipped as damaged, by their place; the
    others are enhanced packet blocks, whose fields numpy reads when the run becomes batches."""

    __slots__ = ("starts", "frames", "notes", "first", "tell", "_emitting")

    def __init__(self, tell: Skip | None) -> None:
        self.starts: list[int] = []
        #: Place in the run -> (frame offset in the buffer, captured length, wire length, time, link type).
        self.frames: dict[int, tuple[int, int, int, float, int]] = {}
        #: Place in the run -> why PcapngBlocks skipped that packet: told (``tell``) in order, as batches are made.
        self.notes: dict[int, str] = {}
        #: The number of the run's first packet.
        self.first = 0
        self.tell = tell
        self._emitting = False

    def walked(self, blocks: PcapngBlocks, starts: list[int]) -> None:
        """Enhanced packet blocks the walk found: counted as read (PcapngBlocks.number)."""
        if starts:
            if not self.starts:
                self.first = blocks.number + 1
            self.starts += starts
            blocks.number += len(starts)

    def read(self, blocks: PcapngBlocks, offset: int, frame: Frame) -> None:
        """A frame PcapngBlocks read (and counted), whose bytes start at ``offset`` in the buffer."""
        if not self.starts:
            self.first = frame.number
        self.frames[len(self.starts)] = (offset, len(frame.data), frame.wire_len, frame.ts, frame.linktype)
        self.starts.append(offset)

    def skip(self, number: int, message: str) -> None:
        """PcapngBlocks' ``skip``: a packet it read and skipped, told in its place among the run's (at once
        while the run becomes batches: a damaged enhanced packet block read there)."""
        assert self.tell is not None
        if self._emitting:
            self.tell(number, message)
            return
        if not self.starts:
            self.first = number
        self.notes[len(self.starts)] = message
        self.starts.append(-1)

    def batches(self, blocks: PcapngBlocks, buf: bytes, size: int) -> Iterator[Batch]:
        """The run's frames as batches of one link type each; each enhanced packet block the checks find
        damaged is read by :meth:`PcapngBlocks.block` where it lies, which skips (and tells) or raises.
        The run is empty after."""
        starts, frames, notes, first = self.starts, self.frames, self.notes, self.first
        if not starts:
            return
        self.starts, self.frames, self.notes = [], {}, {}
        interfaces = blocks.interfaces
        total = len(starts)
        pos = np.asarray(starts, dtype=np.int64)
        enhanced = np.ones(total, dtype=bool)
        enhanced[[*frames, *notes]] = False
        rows = np.flatnonzero(enhanced)
        fields = _items(np.frombuffer(buf, dtype=np.uint8), 28)[pos[rows]].view(
            np.dtype(blocks.order + "u4")).reshape(-1, 7)
        length, iface, cap = (fields[:, k].astype(np.int64) for k in (1, 2, 5))
        damaged = (length % 4 != 0) | (length > MAX_RECORD) | (iface >= len(interfaces)) | (cap > length - 28)
        bad = sorted(rows[damaged].tolist() + list(notes))
        ok = ~damaged
        rows, fields, iface, cap = rows[ok], fields[ok], iface[ok], cap[ok]
        off, caps, wire, linktype = (np.empty(total, dtype=np.int64) for _ in range(4))
        ts = np.empty(total)
        off[rows], caps[rows], wire[rows] = pos[rows] + 28, cap, np.maximum(fields[:, 6].astype(np.int64), cap)
        ticks = (fields[:, 3].astype(np.uint64) << np.uint64(32)) | fields[:, 4]
        for i in np.unique(iface).tolist():
            mine = iface == i
            ts[rows[mine]] = _times(interfaces[i], ticks[mine])
        if len(rows):
            linktype[rows] = np.array([x.linktype for x in interfaces])[iface]
        for k, (o, c, w, t, lt) in frames.items():
            off[k], caps[k], wire[k], ts[k], linktype[k] = o, c, w, t, lt
        records = [off, caps, wire, ts]
        # The frames between the damaged blocks (a batch numbers its frames without a gap), by link type.
        for a, b in zip([-1, *bad], [*bad, total]):
            if a + 1 < b:
                cuts = (np.flatnonzero(linktype[a + 2:b] != linktype[a + 1:b - 1]) + a + 2).tolist()
                for s, e in zip([a + 1, *cuts], [*cuts, b]):
                    yield from _emit(int(linktype[s]), buf, [x[s:e] for x in records], first + s, size)
            if b in notes:
                self.tell(first + b, notes[b])  # type: ignore[misc]
            elif b < total:  # a damaged enhanced packet block: PcapngBlocks skips it (and tells) or raises
                blocks.number = first + b - 1
                rest = io.BytesIO(buf)
                rest.seek(starts[b])
                self._emitting = True
                try:
                    frame = blocks.block(rest.read)
                finally:
                    self._emitting = False
                assert frame is None and not blocks.ended, "numpy's checks of a packet block and PcapngBlocks' differ"
        blocks.number = first + total - 1


def _times(interface: Interface, ticks: np.ndarray) -> np.ndarray:
    """Interface.time of each of ``ticks`` (uint64), in the same float operations."""
    if not interface.per_second:
        return ticks.astype(np.float64) * interface.tick + interface.offset
    if interface.per_second > np.iinfo(np.uint64).max:  # if_tsresol up to 10**127: every count is a fraction
        sec, frac = np.zeros(len(ticks), dtype=np.uint64), ticks
    else:
        sec, frac = np.divmod(ticks, np.uint64(interface.per_second))
    return sec.astype(np.float64) + frac.astype(np.float64) * interface.tick + interface.offset


@attrs.define(slots=True)
class Headers:
    """Header fields of a batch; ``ok`` marks the frames decoded here."""

    ok: np.ndarray
    proto: np.ndarray
    vlan: np.ndarray
    #: IPv4: the address.  IPv6: its low 64 bits (two's complement; ``src_hi``/``dst_hi`` hold the
    #: high ones), which is all the shard hash needs: it sums the two addresses modulo 2**64.
    src: np.ndarray
    dst: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    flags: np.ndarray
    #: Captured transport payload length.
    paylen: np.ndarray
    #: Offsets into the batch's buffer: the IP header, the transport payload, the end of the IP packet
    #: (the scalar decoder's ``ip`` is buf[l3:ipend], its ``payload`` buf[pay:ipend]).
    l3: np.ndarray
    pay: np.ndarray
    ipend: np.ndarray
    #: TCP sequence number (0 for UDP).
    seq: np.ndarray
    #: Transport payload length on the wire, from the IP total (IPv6: payload) length (Packet.payload_len).
    paywire: np.ndarray
    #: IPv6 frames, and the high 64 bits of their addresses (uint64; 0 elsewhere).
    ip6: np.ndarray
    src_hi: np.ndarray
    dst_hi: np.ndarray


def _rows(b: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """``b[a:a + width]`` for each ``a`` of ``at``, as the rows of one (len(at), width) uint8 array;
    bytes past the end of ``b`` read as zero.

    One gather copies each frame's header bytes side by side, and every field is then a column:
    reading a field as a gather per byte, at computed offsets, cost several times as much.  The
    gather is of ``width``-byte items (a view of ``b`` with one item starting at every byte), which
    numpy copies whole: three times faster than rows of a 2-D sliding window.
    """
    last = len(b) - width
    if len(at) and int(at.max()) <= last:
        return _items(b, width)[at].view(np.uint8).reshape(len(at), width)
    rows = np.zeros((len(at), width), dtype=np.uint8)
    inside = at <= last
    if last >= 0:
        rows[inside] = _items(b, width)[at[inside]].view(np.uint8).reshape(-1, width)
    # The few rows that run past the buffer: from a zero-padded copy of its end.
    tail = max(last, 0)
    padded = np.zeros(len(b) - tail + width, dtype=np.uint8)
    padded[:len(b) - tail] = b[tail:]
    near = np.minimum(at[~inside], len(b)) - tail
    rows[~inside] = _items(padded, width)[near].view(np.uint8).reshape(-1, width)
    return rows


def _be16(rows: np.ndarray, col: int) -> np.ndarray:
    return rows[:, col:col + 2].view(">u2")[:, 0].astype(np.int64)


def _be32(rows: np.ndarray, col: int) -> np.ndarray:
    return rows[:, col:col + 4].view(">u4")[:, 0].astype(np.int64)


def _be64(rows: np.ndarray, col: int) -> np.ndarray:
    """Big-endian 64-bit words (uint64)."""
    return rows[:, col:col + 8].view(">u8")[:, 0].astype(np.uint64)


def _not_decoded(n: int) -> Headers:
    zeros = [np.zeros(n, dtype=np.int64) for _ in range(13)]
    return Headers(np.zeros(n, dtype=bool), *zeros, np.zeros(n, dtype=bool), np.zeros(n, dtype=np.uint64),
                   np.zeros(n, dtype=np.uint64))


#: Bytes from a frame's start that hold its link header's fields (Ethernet with two VLAN tags).
_LINK = 22
#: Bytes from the IP header's start that hold its fields (IPv6's fixed header; IPv4's are in the first 20).
_IP = 40
#: Bytes from the transport header's start that hold its fields (TCP's to the flags).
_L4 = 14


#: The link types both decoders read, as cheaders.decode numbers them.
_LINKS = {DLT_EN10MB: 0, DLT_LINUX_SLL: 1, DLT_LINUX_SLL2: 2, DLT_RAW: 3, DLT_RAW_OLD: 3, DLT_RAW_OPENBSD: 3,
          DLT_IPV4: 3, DLT_NULL: 4, DLT_LOOP: 4}


def decode_headers(batch: Batch) -> Headers:
    """The common case decoded (TCP and UDP over IPv4, and over IPv6 without extension headers); every
    other frame has ``ok`` False and is left to the scalar decoder.  In C (``cheaders.pyx``) when it is
    built, else in numpy (:func:`decode_numpy`): the same frames decoded, the same fields."""
    link = _LINKS.get(batch.linktype)
    if link is None:
        return _not_decoded(len(batch))
    if decode_c is not None:
        return Headers(*decode_c(batch.buf, batch.off, batch.cap, link))
    return decode_numpy(batch)


def decode_numpy(batch: Batch) -> Headers:
    """:func:`decode_headers` vectorised: each field one array operation over the whole batch.

    A frame is ok only if every field read lies inside it (``end``); the rows of a frame too short
    hold bytes of the next frame or zeros, and its fields are garbage nobody reads.
    """
    n = len(batch)
    b = np.frombuffer(batch.buf, dtype=np.uint8)
    off, cap = batch.off, batch.cap
    end = off + cap
    vlan = np.zeros(n, dtype=np.int64)
    lt = batch.linktype
    link = _rows(b, off, _LINK)

    # The link layer: where the IP header starts, and whether it is IPv6 (else it must be IPv4).
    if lt == DLT_EN10MB:
        ok = off + 14 <= end
        et = _be16(link, 12)
        l3 = off + 14
        for tag in (14, 18):  # 802.1Q and QinQ; the innermost tag wins, as ndpiReader reports it
            tagged = (et == 0x8100) | (et == 0x88A8) | (et == 0x9100)  # an untagged frame's et is no tag
            if not tagged.any():
                break
            ok &= ~tagged | (off + tag + 4 <= end)
            vlan = np.where(tagged, _be16(link, tag) & 0x0FFF, vlan)
            et = np.where(tagged, _be16(link, tag + 2), et)
            l3 = np.where(tagged, off + tag + 4, l3)
        ip6 = et == 0x86DD
        ok &= (et == 0x0800) | ip6
    elif lt == DLT_LINUX_SLL:
        ok = off + 16 <= end
        et = _be16(link, 14)
        ip6 = et == 0x86DD
        ok &= (et == 0x0800) | ip6
        l3 = off + 16
    elif lt == DLT_LINUX_SLL2:
        ok = off + 2 <= end
        et = _be16(link, 0)
        ip6 = et == 0x86DD
        ok &= (et == 0x0800) | ip6
        l3 = off + 20
    elif lt in (DLT_RAW, DLT_RAW_OLD, DLT_RAW_OPENBSD, DLT_IPV4):
        ok = off + 1 <= end
        l3 = off
        ip6 = link[:, 0] >> 4 == 6  # the version nibble, as the scalar decoder reads it
    elif lt in (DLT_NULL, DLT_LOOP):
        ok = off + 4 <= end
        # The scalar decoder takes the smaller of the two byte orders (families are small numbers).
        fam = np.minimum(_be32(link, 0), link[:, 0:4].view("<u4")[:, 0].astype(np.int64))
        ip6 = (fam == 10) | (fam == 24) | (fam == 28) | (fam == 30)
        ok &= (fam == 2) | ip6
        l3 = off + 4
    else:
        return _not_decoded(n)

    # IPv4: header length, total length, no fragment.
    ok &= l3 + 20 <= end
    ip = _rows(b, l3, _IP)
    vihl = ip[:, 0].astype(np.int64)
    ihl = (vihl & 0x0F) * 4
    total = _be16(ip, 2)
    frag = _be16(ip, 6) & 0x3FFF
    proto = ip[:, 9].astype(np.int64)
    ok4 = (vihl >> 4 == 4) & (ihl >= 20) & (total >= ihl) & (frag == 0)
    src = _be32(ip, 12)
    dst = _be32(ip, 16)
    ipend = np.minimum(end, l3 + total)  # Ethernet padding dropped, snap length tolerated
    l4 = l3 + ihl
    l4wire = total - ihl
    src_hi = dst_hi = np.zeros(n, dtype=np.uint64)
    if ip6.any():
        # IPv6 without extension headers (the next header is the transport) and a payload length
        # (0 means a jumbogram): the rest, fragments included, goes to the scalar decoder.
        plen = _be16(ip, 4)
        ok6 = (l3 + 40 <= end) & (vihl >> 4 == 6) & (plen > 0)
        proto = np.where(ip6, ip[:, 6], proto)
        ok4 = np.where(ip6, ok6, ok4)
        ipend = np.where(ip6, np.minimum(end, l3 + 40 + plen), ipend)
        l4 = np.where(ip6, l3 + 40, l4)
        l4wire = np.where(ip6, plen, l4wire)
        i6 = np.flatnonzero(ip6)
        at = ip[i6]
        src_hi, dst_hi = np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint64)
        src_hi[i6] = _be64(at, 8)
        dst_hi[i6] = _be64(at, 24)
        src[i6] = _be64(at, 16).view(np.int64)
        dst[i6] = _be64(at, 32).view(np.int64)
    ok &= ok4 & ((proto == TCP) | (proto == UDP))
    tcp = proto == TCP
    ok &= np.where(tcp, l4 + 20, l4 + 8) <= end
    t = _rows(b, l4, _L4)
    sport = _be16(t, 0)
    dport = _be16(t, 2)
    doff = (t[:, 12].astype(np.int64) >> 4) * 4
    ok &= np.where(tcp, (l4 + 20 <= ipend) & (doff >= 20) & (l4 + doff <= ipend), l4 + 8 <= ipend)
    flags = np.where(tcp, t[:, 13], 0).astype(np.int64)
    hlen = np.where(tcp, doff, 8)
    pay = l4 + hlen
    paylen = ipend - pay
    seq = np.where(tcp, _be32(t, 4), 0)
    paywire = np.maximum(l4wire - hlen, 0)
    return Headers(ok, proto, vlan, src, dst, sport, dport, flags, paylen, l3, pay, ipend, seq, paywire,
                   ip6 & ok, src_hi, dst_hi)
