"""Captures in batches, with the common headers decoded by numpy for a whole batch at once.

A CPython loop that reads a packet's header fields costs several
microseconds; numpy gathers the same fields for thousands of packets in one
call.  Only the common case is decoded here — Ethernet (with 802.1Q/QinQ),
Linux cooked, raw IP or loopback framing around an unfragmented IPv4 TCP or
UDP packet with its headers captured — and every other frame is marked for
the scalar decoder (:mod:`dpicore.decode.packets`), which stays the
reference: a frame is either decoded here with the same result, or not at all.
"""

from __future__ import annotations

import struct
from typing import Iterator

import attrs
import numpy as np

from .capture import MAX_RECORD, PCAP_MAGICS, CaptureError, CaptureReader
from .packets import (DLT_EN10MB, DLT_IPV4, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_LOOP, DLT_NULL, DLT_RAW,
                      DLT_RAW_OLD, DLT_RAW_OPENBSD)

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


def batches(path: str, size: int = BATCH) -> Iterator[Batch]:
    """Batches of a capture file.  Damage raises :class:`CaptureError` after every
    complete frame before it was yielded (the same messages as CaptureReader)."""
    reader = CaptureReader(path)  # validates the file the same way the frame path does
    try:
        if reader.format == "pcap":
            yield from _pcap_batches(path, reader._fh, size)
        else:
            yield from _frame_batches(reader, size)
    finally:
        reader.close()


def _pcap_batches(path: str, fh, size: int) -> Iterator[Batch]:  # type: ignore[no-untyped-def]
    order, unit = PCAP_MAGICS[fh.read(4)]
    rest = fh.read(20)
    if len(rest) < 20:
        raise CaptureError(path, "file header cut short")
    linktype = struct.unpack(order + "I", rest[16:20])[0] & 0xFFFF
    unpack = struct.Struct(order + "IIII").unpack_from
    caplen = struct.Struct(order + "I").unpack_from
    header = np.dtype(order + "u4")
    buf = b""
    pos = 0
    number = 0
    eof = False
    while not eof:
        try:
            data = fh.read(CHUNK)
        except (OSError, EOFError) as exc:  # a compressed file that breaks off
            raise CaptureError(path, f"unreadable data: {exc}", number + 1) from None
        if not data:
            eof = True
        buf = buf[pos:] + data
        pos = 0
        n = len(buf)
        # Only the walk from record to record is a Python loop (it reads one length per record);
        # numpy reads the record headers found.
        starts: list[int] = []
        found = starts.append
        while pos + 16 <= n:
            cap = caplen(buf, pos + 8)[0]
            if cap > MAX_RECORD:
                yield from _emit(linktype, buf, starts, header, number + 1, unit, size)
                raise CaptureError(path, f"corrupt record (captured length {cap})", number + len(starts) + 1)
            end = pos + 16 + cap
            if end > n:
                break
            found(pos)
            pos = end
        yield from _emit(linktype, buf, starts, header, number + 1, unit, size)
        number += len(starts)
        if eof and pos < n:
            if n - pos < 16:
                raise CaptureError(path, "capture cut short inside a record header", number + 1)
            cap = unpack(buf, pos)[2]
            raise CaptureError(path, f"capture cut short: packet has {n - pos - 16} of {cap} bytes", number + 1)


def _emit(linktype: int, buf: bytes, starts: list[int], header: np.dtype, first: int, unit: float,
          size: int) -> Iterator[Batch]:
    """Batches of the records whose 16-byte headers start at ``starts`` in ``buf``."""
    if not starts:
        return
    pos = np.array(starts, dtype=np.int64)
    fields = np.frombuffer(buf, dtype=np.uint8)[pos[:, None] + np.arange(16)].view(header).astype(np.int64)
    cap = fields[:, 2]
    ts = fields[:, 0].astype(np.float64) + fields[:, 1].astype(np.float64) * unit
    wire = np.maximum(fields[:, 3], cap)
    off = pos + 16
    for s in range(0, len(pos), size):
        e = s + size
        yield Batch(linktype, buf, off[s:e], cap[s:e], wire[s:e], ts[s:e], first + s)


def _frame_batches(reader: CaptureReader, size: int) -> Iterator[Batch]:
    """pcapng (or anything CaptureReader reads): frames joined into batches per link type."""
    frames: list[bytes] = []
    meta: list[tuple[float, int]] = []
    linktype = -1
    first = 1

    def flush() -> Batch:
        cap = np.fromiter((len(f) for f in frames), dtype=np.int64, count=len(frames))
        off = np.zeros(len(frames), dtype=np.int64)
        np.cumsum(cap[:-1], out=off[1:])
        ts = np.fromiter((m[0] for m in meta), dtype=np.float64, count=len(meta))
        wire = np.fromiter((m[1] for m in meta), dtype=np.int64, count=len(meta))
        batch = Batch(linktype, b"".join(frames), off, cap, wire, ts, first)
        frames.clear()
        meta.clear()
        return batch

    try:
        for number, ts, lt, data, wire in reader:
            if frames and (lt != linktype or len(frames) >= size):
                yield flush()
            if not frames:
                linktype, first = lt, number
            frames.append(data)
            meta.append((ts, wire))
    except CaptureError:
        if frames:
            yield flush()
        raise
    if frames:
        yield flush()


@attrs.define(slots=True)
class Headers:
    """Header fields of a batch; ``ok`` marks the frames decoded here."""

    ok: np.ndarray
    proto: np.ndarray
    vlan: np.ndarray
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
    #: Transport payload length on the wire, from the IP total length (Packet.payload_len).
    paywire: np.ndarray


def _be16(b: np.ndarray, i: np.ndarray) -> np.ndarray:
    return (b[i].astype(np.int64) << 8) | b[i + 1]


def _be32(b: np.ndarray, i: np.ndarray) -> np.ndarray:
    return (b[i].astype(np.int64) << 24) | (b[i + 1].astype(np.int64) << 16) | (b[i + 2].astype(np.int64) << 8) \
        | b[i + 3]


def decode_headers(batch: Batch) -> Headers:
    """Vectorised decode of the common case; everything else has ``ok`` False."""
    n = len(batch)
    b = np.frombuffer(batch.buf, dtype=np.uint8)
    size = len(b)
    off, cap = batch.off, batch.cap
    end = off + cap
    ok = np.ones(n, dtype=bool)
    vlan = np.zeros(n, dtype=np.int64)
    lt = batch.linktype

    def safe(idx: np.ndarray, need: int) -> np.ndarray:
        """Indices clipped into the buffer; frames too short for them are marked not ok."""
        nonlocal ok
        ok &= idx + need <= end
        return np.minimum(idx, size - need)

    if lt == DLT_EN10MB:
        et = _be16(b, safe(off + 12, 2))
        l3 = off + 14
        for _ in range(2):  # 802.1Q and QinQ; the innermost tag wins, as ndpiReader reports it
            tagged = (et == 0x8100) | (et == 0x88A8) | (et == 0x9100)
            if not tagged.any():
                break
            pos = safe(np.where(tagged, l3, off), 4)
            vlan = np.where(tagged, _be16(b, pos) & 0x0FFF, vlan)
            et = np.where(tagged, _be16(b, pos + 2), et)
            l3 = np.where(tagged, l3 + 4, l3)
        ok &= et == 0x0800
    elif lt == DLT_LINUX_SLL:
        ok &= _be16(b, safe(off + 14, 2)) == 0x0800
        l3 = off + 16
    elif lt == DLT_LINUX_SLL2:
        ok &= _be16(b, safe(off, 2)) == 0x0800
        l3 = off + 20
    elif lt in (DLT_RAW, DLT_RAW_OLD, DLT_RAW_OPENBSD, DLT_IPV4):
        l3 = off
    elif lt in (DLT_NULL, DLT_LOOP):
        pos = safe(off, 4)
        # The scalar decoder takes the smaller of the two byte orders; 2 (AF_INET) is the smaller one
        # exactly when the word reads 2 in one order.
        fam_be = _be32(b, pos)
        fam_le = b[pos].astype(np.int64) | (b[pos + 1].astype(np.int64) << 8) | (b[pos + 2].astype(np.int64) << 16) \
            | (b[pos + 3].astype(np.int64) << 24)
        ok &= (fam_le == 2) | (fam_be == 2)
        l3 = off + 4
    else:
        return Headers(np.zeros(n, dtype=bool), *(np.zeros(n, dtype=np.int64) for _ in range(13)))

    p3 = safe(l3, 20)
    vihl = b[p3].astype(np.int64)
    ihl = (vihl & 0x0F) * 4
    total = _be16(b, p3 + 2)
    frag = _be16(b, p3 + 6) & 0x3FFF
    proto = b[p3 + 9].astype(np.int64)
    ok &= (vihl >> 4 == 4) & (ihl >= 20) & (total >= ihl) & (frag == 0) & ((proto == TCP) | (proto == UDP))
    src = _be32(b, p3 + 12)
    dst = _be32(b, p3 + 16)
    ipend = np.minimum(end, l3 + total)  # Ethernet padding dropped, snap length tolerated
    l4 = l3 + ihl
    p4 = safe(l4, 8)
    sport = _be16(b, p4)
    dport = _be16(b, p4 + 2)
    tcp = proto == TCP
    pt = safe(np.where(tcp, l4, off), 20)
    doff = (b[pt + 12].astype(np.int64) >> 4) * 4
    ok &= np.where(tcp, (l4 + 20 <= ipend) & (doff >= 20) & (l4 + doff <= ipend), l4 + 8 <= ipend)
    flags = np.where(tcp, b[pt + 13], 0).astype(np.int64)
    hlen = np.where(tcp, doff, 8)
    pay = l4 + hlen
    paylen = ipend - pay
    seq = np.where(tcp, _be32(b, pt + 4), 0)
    paywire = np.maximum(total - ihl - hlen, 0)
    return Headers(ok, proto, vlan, src, dst, sport, dport, flags, paylen, l3, pay, ipend, seq, paywire)
