"""Capture-file readers: pcap (µs and ns), pcapng (several interfaces and
sections), either of them gzip-compressed.

dpkt parses pcapng's interface headers (imported with the first pcapng
file: importing dpkt is 0.09 s, a sixth of every start); the per-record loop
reads the fixed record headers with ``struct`` itself, because dpkt's readers neither
expose the original (wire) length nor say that the last record was cut off,
and both matter: libprotoident needs wire lengths, and a user needs to know
that a capture was truncated and where.
"""

from __future__ import annotations

import gzip
import io
import select
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, NamedTuple

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"
MAX_RECORD = 256 * 1024  # larger records mean a corrupt file, not a jumbo frame


class CaptureError(Exception):
    """A capture could not be read (further).  ``packet`` is 1-based, 0 for the file header."""

    def __init__(self, path: str, message: str, packet: int = 0) -> None:
        self.path = path
        self.packet = packet
        self.message = message
        where = f" at packet {packet}" if packet else ""
        super().__init__(f"{path}{where}: {message}")


class Frame(NamedTuple):
    number: int
    ts: float
    linktype: int
    data: bytes
    wire_len: int


def _open(path: str) -> tuple[BinaryIO, BinaryIO, "_Unread | None"]:
    """The capture's stream (decompressed if it is gzip), the file's own stream under it (GzipFile does
    not close what it was given), and the pipe under both if the file is a pipe or FIFO
    (``tcpdump -w - | dpi classify /dev/stdin``, ``<(zcat …)``)."""
    try:
        fh: BinaryIO = open(path, "rb", buffering=0)  # type: ignore[assignment]
    except FileNotFoundError:
        raise CaptureError(path, "no such file") from None
    except IsADirectoryError:
        raise CaptureError(path, "is a directory, not a capture file") from None
    except OSError as exc:
        raise CaptureError(path, f"cannot open: {exc.strerror or exc}") from None
    pipe = None
    if fh.seekable():
        fh = io.BufferedReader(fh)  # type: ignore[arg-type]
    else:
        # A pipe cannot seek back after the format checks: the bytes they read (the gzip magic, then
        # the capture's) are put in front of the rest, under the one buffer the reading goes through.
        head = b""
        try:
            while len(head) < 4 and (piece := fh.read(4 - len(head))):
                head += piece
        except OSError as exc:
            fh.close()
            raise CaptureError(path, f"cannot read: {exc}") from None
        pipe = _Unread(head, fh)
        fh = io.BufferedReader(pipe, PIPE_BUFFER)  # type: ignore[assignment]
    try:
        head = _peek(fh, 2, path)
    except CaptureError:
        fh.close()
        raise
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=fh), fh, pipe  # type: ignore[return-value]
    return fh, fh, pipe


def _peek(fh: BinaryIO, n: int, path: str) -> bytes:
    """The first ``n`` (<= 4) bytes of ``fh`` (fewer at its end), which the stream still starts with.

    A pipe cannot seek back: its first bytes were read by :func:`_open`, and its buffer holds them.
    """
    try:
        if not fh.seekable():
            return fh.peek(n)[:n]  # type: ignore[attr-defined]
        head = fh.read(n)
        try:
            fh.seek(0)
        except io.UnsupportedOperation:  # gzip through a pipe (GzipFile says it seeks): at its end,
            if len(head) == n:          # with fewer bytes than a magic, there is nothing to go back to
                raise
        return head
    except (OSError, EOFError, zlib.error) as exc:  # gzip that is not really gzip
        raise CaptureError(path, f"cannot read: {exc}") from None


#: A pipe's read buffer: what Linux holds in a pipe by default.
PIPE_BUFFER = 1 << 16
#: From a pipe, frames are classified once nothing more arrives for PIPE_IDLE seconds, or once the first
#: of them has waited PIPE_AGE seconds and the pipe has nothing at that moment.
PIPE_IDLE = 0.005
PIPE_AGE = 0.05


def pipe_wait(age: float) -> float:
    """How long to wait for more of a piped capture before classifying frames that arrived ``age``
    seconds ago: PIPE_IDLE, less near PIPE_AGE, 0 past it."""
    return max(0.0, min(PIPE_IDLE, PIPE_AGE - age))


class _Unread(io.RawIOBase):
    """``head``, then the rest of the pipe ``stream``, each read what one read of it gives (a pipe's
    reader must not wait for 4 MB before it can classify what has arrived)."""

    def __init__(self, head: bytes, stream: io.FileIO) -> None:
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._stream.fileno()

    def readinto(self, b: Any) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._stream.readinto(b)

    def idle(self, wait: float) -> bool:
        """Whether nothing more arrives through the pipe within ``wait`` seconds."""
        try:
            return not select.select([self._stream], [], [], wait)[0]
        except (OSError, ValueError):  # nothing to wait on: go on reading
            return False

    def close(self) -> None:
        self._stream.close()
        super().close()


class CaptureReader:
    """Iterate the frames of one capture file.

    Iteration raises :class:`CaptureError` when it meets damage, after every
    good frame before it has been yielded, so callers can report what they
    have and then the error.
    """

    def __init__(self, path: str | Path, skip: Skip | None = None) -> None:
        self.path = str(path)
        #: Told of each pcapng packet block skipped as damaged (see PcapngBlocks); None: such damage ends
        #: the reading, as any other.
        self.skip = skip
        self._fh, self._base, self._pipe = _open(self.path)
        #: The capture comes through a pipe or FIFO (``/dev/stdin``): it is read as it arrives.
        self.pipe = self._pipe is not None
        try:
            self._magic = _peek(self._fh, 4, self.path)
        except CaptureError:
            self.close()
            raise
        if self._magic in PCAP_MAGICS:
            self.format = "pcap"
        elif self._magic == PCAPNG_SHB:
            self.format = "pcapng"
        else:
            self.close()
            if not self._magic:
                raise CaptureError(self.path, "empty file, not a capture")
            raise CaptureError(self.path, "not a pcap or pcapng capture (unknown magic "
                               f"{self._magic.hex()})")
        self.linktypes: list[int] = []

    def close(self) -> None:
        self._fh.close()
        self._base.close()

    def more_within(self, wait: float) -> bool:
        """Whether more of a piped capture arrives within ``wait`` seconds (False for a regular file)."""
        return self._pipe is not None and not self._pipe.idle(wait)

    def __enter__(self) -> "CaptureReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        try:
            if self.format == "pcap":
                yield from self._pcap()
            else:
                yield from self._pcapng()
        except (OSError, EOFError, zlib.error, struct.error) as exc:  # BadGzipFile is an OSError
            raise CaptureError(self.path, f"unreadable data: {exc}", self._number + 1) from None

    _number = 0

    # -- pcap --------------------------------------------------------------
    def _pcap(self) -> Iterator[Frame]:
        order, unit = PCAP_MAGICS[self._magic]
        head = self._fh.read(24)
        if len(head) < 24:
            raise CaptureError(self.path, "file header cut short")
        linktype = struct.unpack_from(order + "I", head, 20)[0] & 0xFFFF  # the header's last field
        self.linktypes = [linktype]
        rec = struct.Struct(order + "IIII")
        read = self._fh.read
        number = 0
        while True:
            raw = read(16)
            if not raw:
                return
            if len(raw) < 16:
                self._number = number
                raise CaptureError(self.path, "capture cut short inside a record header", number + 1)
            sec, frac, caplen, wire = rec.unpack(raw)
            if caplen > MAX_RECORD:
                raise CaptureError(self.path, f"corrupt record (captured length {caplen})", number + 1)
            data = read(caplen)
            number += 1
            self._number = number
            if len(data) < caplen:
                raise CaptureError(self.path, f"capture cut short: packet has {len(data)} of "
                                   f"{caplen} bytes", number)
            yield Frame(number, sec + frac * unit, linktype, data, max(wire, caplen))

    # -- pcapng ------------------------------------------------------------
    def _pcapng(self) -> Iterator[Frame]:
        blocks = PcapngBlocks(self.path, self.skip)
        self.linktypes = blocks.linktypes
        read = self._fh.read
        while True:
            frame = blocks.block(read)
            self._number = blocks.number
            if frame is not None:
                yield frame
            elif blocks.ended:
                return


class Interface(NamedTuple):
    """A pcapng interface: its link type and how its packets' times are counted."""

    linktype: int
    #: Ticks per second, or 0 for a binary resolution (then ``tick`` alone says it).
    per_second: int
    #: Seconds per tick.
    tick: float
    #: Seconds added to every time (if_tsoffset).
    offset: int

    def time(self, ticks: int) -> float:
        if self.per_second:  # seconds and fraction apart, as a pcap's: the whole count times an inexact
            sec, frac = divmod(ticks, self.per_second)  # 1e-9 could land a microsecond off
            return sec + frac * self.tick + self.offset
        return ticks * self.tick + self.offset


#: Told of a packet skipped as damaged: (its number, what is wrong).
Skip = Callable[[int, str], None]


class PcapngBlocks:
    """pcapng's blocks, read one at a time, and what reading them depends on: the section's byte
    order, its interfaces, the number of the last packet.

    The one reader of pcapng blocks: the frame-by-frame reader reads every
    block here; the batch reader (:mod:`dpicore.decode.batch`) reads the
    enhanced packet blocks of a file in numpy, with :attr:`header` and
    :attr:`interfaces`, and hands every other block here, and every packet
    block its checks find damaged, so the messages and packet numbers of
    damage are the same in both.

    A packet block whose block is sound (its length frames it) but whose
    packet is not — a captured length past the block, an interface never
    described, fields cut short — costs that packet alone when ``skip`` is
    given: it is told there and the reading goes on with the next block,
    where a pcap file's records, framed by their own lengths, cannot.
    """

    def __init__(self, path: str, skip: Skip | None = None) -> None:
        self.path = path
        self.skip = skip
        self.order = "<"
        self.interfaces: list[Interface] = []
        #: The link type of every interface described so far, in every section.
        self.linktypes: list[int] = []
        #: Packets read so far (the number of the last).
        self.number = 0
        #: (type, length) of the block header at an offset, in the section's byte order.
        self.header = struct.Struct("<II").unpack_from
        #: The last read found the end of the capture.
        self.ended = False

    def block(self, read: Callable[[int], bytes]) -> Frame | None:
        """Read one block with ``read``: the frame it carries, or None (no packet, a packet skipped as
        damaged, or the end of the capture: then :attr:`ended`).  Damage raises CaptureError."""
        head = read(8)
        if not head:
            self.ended = True
            return None
        if len(head) < 8:
            raise CaptureError(self.path, "capture cut short inside a block header", self.number + 1)
        if head[:4] == PCAPNG_SHB:
            self._section(head, read)
            return None
        btype, length = self.header(head)
        if length < 12 or length % 4 or length > MAX_RECORD:
            raise CaptureError(self.path, f"corrupt block (type {btype}, length {length})", self.number + 1)
        body = read(length - 8)
        if len(body) < length - 8:
            raise CaptureError(self.path, "capture cut short inside a block", self.number + 1)
        if btype == 1:  # interface description
            self._interface(head, body)
        elif btype in (6, 2):  # enhanced packet / obsolete packet block
            return self._packet(btype, length, body)
        elif btype == 3:  # simple packet block: no timestamp
            self.number += 1
            if not self.interfaces:
                self._damaged("simple packet before any interface description")
                return None
            (wire,) = struct.unpack_from(self.order + "I", body, 0)
            return Frame(self.number, 0.0, self.interfaces[0].linktype, body[4:4 + min(wire, len(body) - 8)], wire)
        # other blocks (name resolution, statistics, custom) carry no packets
        return None

    def _section(self, head: bytes, read: Callable[[int], bytes]) -> None:
        """A section header block: a byte order, and no interfaces yet."""
        bom = read(4)
        if bom == b"\x4d\x3c\x2b\x1a":
            order = "<"
        elif bom == b"\x1a\x2b\x3c\x4d":
            order = ">"
        else:
            raise CaptureError(self.path, "pcapng section header with unknown byte order", self.number + 1)
        (length,) = struct.unpack(order + "I", head[4:8])
        if length < 28 or length > MAX_RECORD:
            raise CaptureError(self.path, f"corrupt section header (length {length})", self.number + 1)
        rest = read(length - 12)
        if len(rest) < length - 12:
            raise CaptureError(self.path, "capture cut short inside a section header", self.number + 1)
        self.order = order
        self.header = struct.Struct(order + "II").unpack_from
        self.interfaces = []

    def _interface(self, head: bytes, body: bytes) -> None:
        import dpkt.pcapng

        cls = dpkt.pcapng.InterfaceDescriptionBlockLE if self.order == "<" else dpkt.pcapng.InterfaceDescriptionBlock
        try:
            idb = cls(head + body)
        except Exception as exc:  # dpkt on hostile bytes: dpkt.Error, or UnicodeDecodeError (a comment not in UTF-8)
            raise CaptureError(self.path, f"unreadable data: {exc}", self.number + 1) from None
        per_second, tick, offset = 10 ** 6, 1e-6, 0
        for opt in idb.opts:
            if opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSRESOL and opt.data:
                v = opt.data[0]
                if v & 0x80:
                    per_second, tick = 0, 2.0 ** -(v & 0x7F)
                else:
                    per_second, tick = 10 ** (v & 0x7F), 10.0 ** -(v & 0x7F)
            elif opt.code == dpkt.pcapng.PCAPNG_OPT_IF_TSOFFSET and len(opt.data) >= 8:
                offset = struct.unpack(self.order + "q", opt.data[:8])[0]
        self.interfaces.append(Interface(idb.linktype & 0xFFFF, per_second, tick, offset))
        self.linktypes.append(idb.linktype & 0xFFFF)

    def _packet(self, btype: int, length: int, body: bytes) -> Frame | None:
        """An enhanced (6) or obsolete (2) packet block's frame (None: skipped as damaged)."""
        self.number += 1
        if len(body) < 20:  # both start with 20 bytes of fixed fields
            self._damaged(f"corrupt packet block (block length {length})")
            return None
        if btype == 6:
            iface, hi, lo, caplen, wire = struct.unpack_from(self.order + "IIIII", body, 0)
        else:
            iface, _drops, hi, lo, caplen, wire = struct.unpack_from(self.order + "HHIIII", body, 0)
        if iface >= len(self.interfaces):
            self._damaged(f"packet names interface {iface}, which was never described")
            return None
        if 20 + caplen > len(body):
            self._damaged(f"corrupt packet block (captured length {caplen})")
            return None
        interface = self.interfaces[iface]
        return Frame(self.number, interface.time((hi << 32) | lo), interface.linktype, body[20:20 + caplen],
                     max(wire, caplen))

    def _damaged(self, message: str) -> None:
        """The packet just counted is damaged in a sound block: told to ``skip``, else the end."""
        if self.skip is None:
            raise CaptureError(self.path, message, self.number)
        self.skip(self.number, message)


def read_frames(path: str | Path) -> Iterator[Frame]:
    """Frames of a capture file; see :class:`CaptureReader` for error behaviour."""
    with CaptureReader(path) as reader:
        yield from reader


def is_capture(data: bytes) -> bool:
    """Whether ``data`` starts like a capture file (pcap, pcapng or gzip)."""
    return data[:4] in PCAP_MAGICS or data[:4] == PCAPNG_SHB or data[:2] == GZIP_MAGIC


__all__ = ["CaptureError", "CaptureReader", "Frame", "Interface", "PcapngBlocks", "Skip", "read_frames", "is_capture"]
