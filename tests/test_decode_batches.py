"""The batch readers of pcap and pcapng files (``dpicore.decode.batch``) against the frame-by-frame
reader (``CaptureReader``), the reference: the same frames (number, time, link type, bytes, wire length)
and the same damage (packet number, message) on random files — pcap of either byte order and
resolution; pcapng sections of either byte order, interfaces of several link types and timestamp
resolutions, packet blocks of every kind, blocks that carry no packet — with damage, cut short,
gzip, read whole and in chunks far smaller than a record (a plain pcap file reads the record a chunk
ends inside again with the next chunk; gzip joins the pieces).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpicore.decode import CaptureError, CaptureReader
from dpicore.decode import batch as B
from dpicore.decode import capture as C
from tests.helpers.frames import _block, _opt, eth, pcap_bytes, pcapng_bytes, udp4

LINKTYPES = [1, 113, 101, 276]
#: if_tsresol bytes: none (µs), decimal ones (ms, µs, ns, 10**19, 10**20: past a 64-bit count), binary ones.
RESOLUTIONS = [None, 3, 6, 9, 19, 20, 0x80 | 0, 0x80 | 20, 0x80 | 30]


def _shb(o: str) -> bytes:
    body = struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    return struct.pack(o + "II", 0x0A0D0D0A, 12 + len(body)) + body + struct.pack(o + "I", 12 + len(body))


def _idb(o: str, linktype: int, resolution: int | None, offset: int | None) -> bytes:
    opts = b""
    if resolution is not None:
        opts += _opt(o, 9, bytes([resolution]))
    if offset is not None:
        opts += _opt(o, 14, struct.pack(o + "q", offset))
    if opts:
        opts += _opt(o, 0, b"")
    return _block(o, 1, struct.pack(o + "HHI", linktype, 0, 262144) + opts)


def _padded(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


@st.composite
def pcapng_files(draw: Any) -> bytes:
    """A pcapng file of 1-3 sections; mostly enhanced packet blocks, as real files are."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        o = draw(st.sampled_from("<>"))
        out.append(_shb(o))
        interfaces = 0
        for _ in range(draw(st.integers(0, 40))):
            kind = draw(st.sampled_from(["epb"] * 8 + ["idb", "spb", "opb", "other", "other", "short"]))
            if kind == "idb" or (kind == "epb" and not interfaces and draw(st.booleans())):
                out.append(_idb(o, draw(st.sampled_from(LINKTYPES)), draw(st.sampled_from(RESOLUTIONS)),
                                draw(st.one_of(st.none(), st.integers(-2**40, 2**40)))))
                interfaces += 1
                continue
            data = draw(st.binary(max_size=700))
            wire = len(data) + draw(st.sampled_from([0, 0, 0, 1, 1500, -1]))
            iface = draw(st.integers(0, interfaces)) if draw(st.integers(0, 30)) else interfaces + 3
            if kind == "epb":
                ticks = draw(st.one_of(st.integers(0, 2**64 - 1),
                                       st.integers(1_600_000_000 * 10**6, 1_700_000_000 * 10**9)))
                # The captured length: the data's, or the most the block holds (its padding and trailing
                # length included, as both readers allow), or one more.
                cap = len(data) + draw(st.sampled_from([0] * 20 + [4 + -len(data) % 4, 5 + -len(data) % 4]))
                body = struct.pack(o + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, cap, max(wire, 0))
                out.append(_block(o, 6, body + _padded(data)))
            elif kind == "opb":
                ticks = draw(st.integers(0, 2**64 - 1))
                body = struct.pack(o + "HHIIII", iface & 0xFFFF, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                                   max(wire, 0))
                out.append(_block(o, 2, body + _padded(data)))
            elif kind == "spb":
                out.append(_block(o, 3, struct.pack(o + "I", max(wire, 0)) + _padded(data)))
            elif kind == "short":  # a packet block too short for its fields: damage
                out.append(_block(o, draw(st.sampled_from([6, 2])), bytes(draw(st.sampled_from([0, 4, 8, 16])))))
            else:  # name resolution, statistics, a custom block: no packet
                out.append(_block(o, draw(st.sampled_from([4, 5, 0xBAD, 0x40000BAD])), _padded(data[:40])))
    return _damaged(draw, bytearray(b"".join(out)), 28)


@st.composite
def pcap_files(draw: Any) -> bytes:
    """A pcap file of either byte order and resolution, with damage as pcapng_files has it."""
    records = [(1_600_000_000 + draw(st.integers(0, 10**6)) / 1000, draw(st.binary(max_size=700)))
               for _ in range(draw(st.integers(0, 40)))]
    data = bytearray(pcap_bytes([(ts, frame, len(frame) + draw(st.sampled_from([0, 0, 1, 1500])))
                                 for ts, frame in records],
                                linktype=draw(st.sampled_from(LINKTYPES)), nano=draw(st.booleans()),
                                big=draw(st.booleans())))
    return _damaged(draw, data, 24)


def _damaged(draw: Any, data: bytearray, start: int) -> bytes:
    """``data`` with up to two pieces of damage from ``start`` on: cut, a word or a byte overwritten,
    bytes inserted."""
    for damage in draw(st.lists(st.sampled_from(["cut", "word", "byte", "insert"]), max_size=2)):
        if len(data) < start + 12:
            break
        at = draw(st.integers(start, len(data) - 4))
        if damage == "cut":
            del data[at:]
        elif damage == "word":  # a length, a field or packet bytes: whatever lies there
            at = at & ~3 if draw(st.booleans()) else at
            data[at:at + 4] = struct.pack(draw(st.sampled_from("<>")) + "I", draw(st.sampled_from(
                [0, 6, 7, 12, 16, 24, 28, 29, 32, 0xFFFF, 300_000, 2**31, 2**32 - 4])))
        elif damage == "byte":
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = bytes(draw(st.sampled_from([1, 4, 8])))
    return bytes(data)


Read = tuple[list[tuple[int, float, int, bytes, int]], list[tuple[int, str]], tuple[int, str] | None]


def _frames(path: Path, skipping: bool) -> Read:
    """(frames, packets skipped as damaged, the damage that ended the reading) of the frame reader."""
    got: list[tuple[int, float, int, bytes, int]] = []
    skipped: list[tuple[int, str]] = []
    try:
        with CaptureReader(path, (lambda n, m: skipped.append((n, m))) if skipping else None) as reader:
            for f in reader:
                got.append((f.number, f.ts, f.linktype, f.data, f.wire_len))
    except CaptureError as exc:
        return got, skipped, (exc.packet, exc.message)
    return got, skipped, None


def _batched(path: Path, skipping: bool) -> Read:
    """The same of the batch reader."""
    got: list[tuple[int, float, int, bytes, int]] = []
    skipped: list[tuple[int, str]] = []
    try:
        for b in B.batches(str(path), skip=(lambda n, m: skipped.append((n, m))) if skipping else None):
            assert len(b.off) == len(b.cap) == len(b.wire) == len(b.ts)
            for i in range(len(b)):
                got.append((b.first + i, float(b.ts[i]), b.linktype, b.frame(i), int(b.wire[i])))
    except CaptureError as exc:
        return got, skipped, (exc.packet, exc.message)
    return got, skipped, None


def _same(path: Path, data: bytes | None = None) -> None:
    """Both readers give the same of ``path`` (first written with ``data``): damaged packet blocks
    skipped, or ending the reading."""
    if data is not None:
        path.write_bytes(data)
    for skipping in (True, False):
        assert _batched(path, skipping) == _frames(path, skipping)


#: Hypothesis settings: the tests write files into pytest's tmp_path, which every example may share.
_FILES = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}


@settings(max_examples=300, **_FILES)
@given(data=pcapng_files())
def test_batches_of_a_pcapng_file_are_its_frames(tmp_path: Path, data: bytes) -> None:
    _same(tmp_path / "x.pcapng", data)


@settings(max_examples=200, **_FILES)
@given(data=pcapng_files(), chunk=st.integers(1, 300))
def test_pcapng_in_chunks_smaller_than_a_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes,
                                               chunk: int) -> None:
    """Chunks of a few bytes, and a largest block of 1 KB in both readers: every block crosses a chunk's
    end, and the blocks over the bound are damage in both."""
    monkeypatch.setattr(B, "CHUNK", chunk)
    monkeypatch.setattr(B, "MAX_RECORD", 1024)
    monkeypatch.setattr(C, "MAX_RECORD", 1024)
    _same(tmp_path / "x.pcapng", data)


@settings(max_examples=100, **_FILES)
@given(data=pcapng_files(), cut=st.floats(0.3, 1.0))
def test_gzip_pcapng_cut_anywhere(tmp_path: Path, data: bytes, cut: float) -> None:
    packed = gzip.compress(data)
    _same(tmp_path / "x.pcapng.gz", packed[:max(20, int(len(packed) * cut))])


@settings(max_examples=200, **_FILES)
@given(data=pcap_files())
def test_batches_of_a_pcap_file_are_its_frames(tmp_path: Path, data: bytes) -> None:
    _same(tmp_path / "x.pcap", data)


@settings(max_examples=200, **_FILES)
@given(data=pcap_files(), chunk=st.integers(1, 300), gz=st.booleans())
def test_pcap_in_chunks_smaller_than_a_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes,
                                             chunk: int, gz: bool) -> None:
    """Every record crosses a chunk's end: a plain file reads it again from its start with the next
    chunk, gzip joins the pieces; records over the bound are damage in both readers."""
    monkeypatch.setattr(B, "CHUNK", chunk)
    monkeypatch.setattr(B, "MAX_RECORD", 1024)
    monkeypatch.setattr(C, "MAX_RECORD", 1024)
    _same(tmp_path / "x.pcap", gzip.compress(data) if gz else data)


def test_a_large_pcapng_is_read_in_batches_of_its_chunks(tmp_path: Path) -> None:
    """Frames over several 4 MB chunks come in full batches (the walk, not a batch per frame), and equal
    the frame reader's; interfaces of two link types in one section split the batches."""
    frames = [eth(udp4(sport=1000 + i % 300, payload=bytes(i % 1400))) for i in range(20_000)]
    data = pcapng_bytes([([(1, None), (1, 9)], [(i % 2, 1_600_000_000 + i / 1000, f) for i, f in enumerate(frames)])])
    path = tmp_path / "big.pcapng"
    path.write_bytes(data)
    assert len(data) > 3 * B.CHUNK
    _same(path)
    sizes = [len(b) for b in B.batches(str(path))]
    assert sum(sizes) == len(frames) and len(sizes) <= len(frames) // B.BATCH + 2 * len(data) // B.CHUNK + 2

    mixed = pcapng_bytes([([(1, None), (113, None)], [(i % 2, 1_600_000_000 + i, f) for i, f in
                                                    enumerate(frames[:100])])])
    path.write_bytes(mixed)
    _same(path)
    assert [(b.linktype, len(b)) for b in B.batches(str(path))] == [(1, 1), (113, 1)] * 50


@pytest.mark.parametrize("between", ["statistics", "simple"])
def test_blocks_between_packets_do_not_cut_the_batches(tmp_path: Path, between: str) -> None:
    """A statistics block after every packet (as some writers put event or statistics blocks between
    packets) is stepped over by the walk, and simple packet blocks join the batch: a few batches, not one
    per frame (each frame was its own batch before: 100 k frames took 30 s instead of 0.7 s to classify)."""
    o = "<"
    frame = eth(udp4(payload=bytes(40)))
    blocks = [_shb(o), _idb(o, 1, None, None)]
    for i in range(3000):
        if between == "simple":
            blocks.append(_block(o, 3, struct.pack(o + "I", len(frame)) + _padded(frame)))
        else:
            body = struct.pack(o + "IIIII", 0, 0, i, len(frame), len(frame))
            blocks += [_block(o, 6, body + _padded(frame)), _block(o, 5, struct.pack(o + "III", 0, 0, 0))]
    path = tmp_path / "between.pcapng"
    path.write_bytes(b"".join(blocks))
    _same(path)
    sizes = [len(b) for b in B.batches(str(path))]
    assert sum(sizes) == 3000 and len(sizes) <= 2, sizes  # a batch ends where the buffer is refilled
