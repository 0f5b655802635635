"""Capture-file readers (dpicore/decode/capture.py and source.py): pcap in
both byte orders and resolutions, pcapng with several interfaces, link types,
timestamp resolutions and sections, gzip, and damage reported with the
packet number after every good frame was yielded.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from dpicore.decode import CaptureError, CaptureReader, CaptureSource, read_frames
from dpicore.decode import packets as P
from tests.helpers.frames import (PSH, ACK, eth, gzip_bytes, pcap_bytes, pcapng_bytes, sll2, tcp4, udp4)

T0 = 1_600_000_000.0
FRAMES = [eth(tcp4(sport=40000 + i, flags=PSH | ACK, payload=b"x" * i)) for i in range(5)]


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("nano", [False, True], ids=["usec", "nsec"])
@pytest.mark.parametrize("big", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_pcap_variants(tmp_path: Path, nano: bool, big: bool, gz: bool) -> None:
    stamps = [T0 + 0.123456 + i * 1.000001 for i in range(len(FRAMES))]
    if nano:
        stamps = [T0 + 0.123456789 + i * 1.000000001 for i in range(len(FRAMES))]
    data = pcap_bytes(list(zip(stamps, FRAMES)), linktype=1, nano=nano, big=big)
    path = _write(tmp_path, "x.pcap.gz" if gz else "x.pcap", gzip_bytes(data) if gz else data)
    frames = list(read_frames(path))
    assert [f.data for f in frames] == FRAMES
    assert [f.number for f in frames] == [1, 2, 3, 4, 5]
    assert all(f.linktype == 1 and f.wire_len == len(f.data) for f in frames)
    tolerance = 2e-9 if nano else 2e-6
    assert all(abs(f.ts - ts) < tolerance * 100 for f, ts in zip(frames, stamps))
    # the sub-second part is read with the right unit, not just the seconds
    assert abs((frames[1].ts - frames[0].ts) - (stamps[1] - stamps[0])) < tolerance


def test_pcap_wire_length_is_kept(tmp_path: Path) -> None:
    frame = FRAMES[4]
    path = _write(tmp_path, "snap.pcap", pcap_bytes([(T0, frame[:40], 1514)]))
    (f,) = read_frames(path)
    assert f.data == frame[:40] and f.wire_len == 1514


def test_pcap_link_type_and_fcs_bits(tmp_path: Path) -> None:
    """The upper bits of the link-type field carry FCS information, not the link type."""
    data = bytearray(pcap_bytes([(T0, sll2(udp4()))], linktype=276))
    struct.pack_into("<I", data, 20, 276 | 0x10000000)
    path = _write(tmp_path, "fcs.pcap", bytes(data))
    (f,) = read_frames(path)
    assert f.linktype == 276


@pytest.mark.parametrize("big", [False, True], ids=["le", "be"])
def test_pcapng_interfaces_resolutions_and_sections(tmp_path: Path, big: bool) -> None:
    ipv4 = udp4(payload=b"raw")
    sections = [
        ([(1, None), (P.DLT_RAW, 9), (P.DLT_LINUX_SLL2, 0x80 | 20)],   # µs default, ns, 2^-20 s
         [(0, T0 + 0.5, FRAMES[0]), (1, T0 + 1.123456789, ipv4), (2, T0 + 2.25, sll2(ipv4)),
          (0, T0 + 3.000001, FRAMES[1])]),
        ([(P.DLT_NULL, 3)],                                             # a new section resets interfaces
         [(0, T0 + 4.001, struct.pack("<I", 2) + ipv4)]),
    ]
    path = _write(tmp_path, "multi.pcapng", pcapng_bytes(sections, big=big))
    with CaptureReader(path) as reader:
        frames = list(reader)
        assert reader.format == "pcapng"
    assert [f.linktype for f in frames] == [1, P.DLT_RAW, P.DLT_LINUX_SLL2, 1, P.DLT_NULL]
    assert [f.number for f in frames] == [1, 2, 3, 4, 5]
    expect = [T0 + 0.5, T0 + 1.123456789, T0 + 2.25, T0 + 3.000001, T0 + 4.001]
    for f, ts in zip(frames, expect):
        assert abs(f.ts - ts) < 2e-6, (f.number, f.ts, ts)
    assert abs(frames[1].ts - (T0 + 1.123456789)) < 1e-6
    assert frames[2].data == sll2(ipv4)
    # and every frame decodes to a packet through the source
    src = CaptureSource(path)
    pkts = list(src)
    assert len(pkts) == 5 and not src.problems and not src.damaged
    assert {p.payload for p in pkts[1:3] + pkts[4:]} == {b"raw"}


def test_pcapng_sections_of_different_byte_order(tmp_path: Path) -> None:
    a = pcapng_bytes([([(1, None)], [(0, T0, FRAMES[0])])], big=False)
    b = pcapng_bytes([([(P.DLT_RAW, None)], [(0, T0 + 1, FRAMES[1][14:])])], big=True)
    frames = list(read_frames(_write(tmp_path, "mixed.pcapng", a + b)))
    assert [(f.linktype, f.data) for f in frames] == [(1, FRAMES[0]), (P.DLT_RAW, FRAMES[1][14:])]


def test_pcapng_unknown_blocks_are_skipped(tmp_path: Path) -> None:
    data = pcapng_bytes([([(1, None)], [(0, T0, FRAMES[0])])])
    nrb = struct.pack("<II", 4, 16) + b"\x00\x00\x00\x00" + struct.pack("<I", 16)   # name resolution
    custom = struct.pack("<II", 0xBAD, 20) + b"\xff" * 8 + struct.pack("<I", 20)
    more = pcapng_bytes([([(1, None)], [(0, T0 + 1, FRAMES[1])])])
    more = more[more.index(struct.pack("<I", 6)):]  # only the packet block of the second file
    frames = list(read_frames(_write(tmp_path, "x.pcapng", data + nrb + custom + more)))
    assert [f.data for f in frames] == FRAMES[:2]


@pytest.mark.parametrize("btype", [6, 2], ids=["enhanced", "obsolete"])
def test_pcapng_packet_block_too_short_for_its_fields(tmp_path: Path, btype: int) -> None:
    """A packet block shorter than its 20 bytes of fixed fields: a clear message naming that packet
    (once the raw struct error, one packet late)."""
    data = pcapng_bytes([([(1, None)], [(0, T0 + i, f) for i, f in enumerate(FRAMES)])])
    short = struct.pack("<II", btype, 16) + b"\x00" * 4 + struct.pack("<I", 16)
    path = _write(tmp_path, "short.pcapng", data + short)
    src = CaptureSource(path)
    assert len(list(src)) == len(FRAMES)
    (line,) = src.problems
    assert "packet 6" in line and "corrupt packet block" in line


def test_a_decoder_failure_costs_one_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception other than DecodeError out of the decoder (a bug a hostile frame runs into) is
    one undecodable frame, told as the decoder's failure, not the end of the file."""
    real = P.Decoder.decode

    def flaky(self: P.Decoder, linktype: int, data: bytes, ts: float, wire_len: int, number: int):  # type: ignore[no-untyped-def]
        if number == 3:
            raise RecursionError("maximum recursion depth exceeded")
        return real(self, linktype, data, ts, wire_len, number)

    monkeypatch.setattr(P.Decoder, "decode", flaky)
    src = CaptureSource(_write(tmp_path, "x.pcap", pcap_bytes([(T0 + i, f) for i, f in enumerate(FRAMES)])))
    assert [p.number for p in src] == [1, 2, 4, 5]
    assert src.damaged and src.problems == [
        f"{src.path}: packet 3: cannot decode: decoder failed (RecursionError: maximum recursion depth exceeded)"]
    assert src.decode(P.DLT_EN10MB, FRAMES[0], T0, len(FRAMES[0]), 3) is None and src.undecodable == 2


def test_pcapng_gzip(tmp_path: Path) -> None:
    data = pcapng_bytes([([(1, 6)], [(0, T0 + i, f) for i, f in enumerate(FRAMES)])])
    frames = list(read_frames(_write(tmp_path, "x.pcapng.gz", gzip_bytes(data))))
    assert [f.data for f in frames] == FRAMES


# -- damage ---------------------------------------------------------------------------
def _good_then_cut(cut: int) -> bytes:
    data = pcap_bytes([(T0 + i, f) for i, f in enumerate(FRAMES)])
    return data[:len(data) - cut]


@pytest.mark.parametrize("cut, where", [(5, "packet has"), (len(FRAMES[4]) + 6, "record header")])
def test_pcap_cut_mid_record(tmp_path: Path, cut: int, where: str) -> None:
    path = _write(tmp_path, "cut.pcap", _good_then_cut(cut))
    got = []
    with pytest.raises(CaptureError) as info:
        for f in read_frames(path):
            got.append(f.data)
    assert got == FRAMES[:4], "every frame before the damage is yielded first"
    assert info.value.packet == 5 and where in info.value.message
    assert str(path) in str(info.value) and "packet 5" in str(info.value)


def test_gzip_cut_short(tmp_path: Path) -> None:
    data = gzip_bytes(pcap_bytes([(T0 + i, f) for i, f in enumerate(FRAMES * 50)]))
    path = _write(tmp_path, "cut.pcap.gz", data[:len(data) // 2])
    src = CaptureSource(path)
    pkts = list(src)
    assert 0 < len(pkts) < 250
    assert src.damaged and len(src.problems) == 1 and str(path) in src.problems[0]
    assert f"packet {len(pkts) + 1}" in src.problems[0]


def test_pcap_corrupt_record_length(tmp_path: Path) -> None:
    data = bytearray(pcap_bytes([(T0 + i, f) for i, f in enumerate(FRAMES)]))
    rec3 = 24 + sum(16 + len(f) for f in FRAMES[:2])
    struct.pack_into("<I", data, rec3 + 8, 0x7FFFFFFF)
    src = CaptureSource(_write(tmp_path, "corrupt.pcap", bytes(data)))
    assert len(list(src)) == 2
    assert src.damaged and "packet 3" in src.problems[0] and "corrupt record" in src.problems[0]


@pytest.mark.parametrize("length", [0x7FFFFFFF, 300_000], ids=["past the end", "inside the file"])
def test_pcap_corrupt_record_length_in_both_readers(tmp_path: Path, length: int) -> None:
    """A length over MAX_RECORD that still lies inside the file makes the batch reader's walk run on
    through garbage before its lengths are checked: nothing from the corrupt record on comes out, and
    both readers report the same packet and message."""
    from dpicore.decode.batch import batches

    frames = [eth(udp4(sport=1000 + i % 50, payload=bytes(200))) for i in range(3000)]  # ~0.7 MB
    data = bytearray(pcap_bytes([(T0 + i, f) for i, f in enumerate(frames)]))
    rec = 24 + sum(16 + len(f) for f in frames[:1000])
    struct.pack_into("<I", data, rec + 8, length)
    path = _write(tmp_path, "corrupt.pcap", bytes(data))
    errors = []
    for read in (lambda: (f.data for f in read_frames(path)),
                 lambda: (b.frame(i) for b in batches(str(path)) for i in range(len(b)))):
        got: list[bytes] = []
        with pytest.raises(CaptureError) as info:
            for x in read():
                got.append(x)
        assert got == frames[:1000]
        errors.append((info.value.packet, info.value.message))
    assert errors[0] == errors[1] == (1001, f"corrupt record (captured length {length})")


def test_pcapng_cut_mid_block(tmp_path: Path) -> None:
    data = pcapng_bytes([([(1, None)], [(0, T0 + i, f) for i, f in enumerate(FRAMES)])])
    src = CaptureSource(_write(tmp_path, "cut.pcapng", data[:-10]))
    assert len(list(src)) == 4
    assert src.damaged and "packet 5" in src.problems[0]


def test_pcapng_packet_on_undescribed_interface(tmp_path: Path) -> None:
    """A packet naming an interface the section never described costs that packet: the blocks after it
    are read on (they ended the file before)."""
    data = pcapng_bytes([([(1, None)], [(0, T0, FRAMES[0]), (7, T0, FRAMES[1]), (0, T0 + 1, FRAMES[2])])])
    src = CaptureSource(_write(tmp_path, "iface.pcapng", data))
    assert [p.number for p in src] == [1, 3]
    assert src.damaged and "interface 7" in src.problems[0] and "packet 2" in src.problems[0]
    assert src.undecodable == 1 and src.fatal is None


@pytest.mark.parametrize("batched", [True, False], ids=["batch path", "packet path"])
def test_a_damaged_pcapng_packet_block_costs_that_packet(tmp_path: Path, batched: bool) -> None:
    """An enhanced packet block whose captured length runs past its block (0xfffffff0), first in the
    file: the block's length still frames it, so the packets after it are classified and the file is
    reported damaged (no flow came out of such a file before; found by fuzzing)."""
    from dpicore.api import Classifier

    good = pcapng_bytes([([(1, None)], [(0, T0 + i, f) for i, f in enumerate(FRAMES)])])
    first = good.index(struct.pack("<I", 6))  # the first packet block
    bad = bytearray(good[first:first + struct.unpack_from("<I", good, first + 4)[0]])  # a copy of that block
    struct.pack_into("<I", bad, 20, 0xFFFFFFF0)
    path = _write(tmp_path, "caplen.pcapng", good[:first] + bytes(bad) + good[first:])
    clf = Classifier(layers=["heuristics"])
    flows = list(clf.classify_pcap(path, batched=batched))
    src = clf.last_source
    assert sum(f.c2s_packets + f.s2c_packets for f in flows) == len(FRAMES)
    assert src.damaged and src.undecodable == 1 and src.problems == [
        f"{path}: packet 1: cannot decode: corrupt packet block (captured length {0xFFFFFFF0})"]


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"hello, this is a text file\n" * 20, "not a pcap or pcapng"),
    (bytes(range(256)), "not a pcap or pcapng"),
    (b"\x1f\x8b" + b"garbage" * 10, "cannot read"),
    (b"\x1f\x8b\x08" + b"\x00" * 40, "cannot read"),   # a gzip header, then a broken deflate stream
    (pcap_bytes([])[:10], "file header cut short"),
])
def test_not_a_capture(tmp_path: Path, content: bytes, message: str) -> None:
    path = _write(tmp_path, "bad.pcap", content)
    with pytest.raises(CaptureError) as info:
        list(read_frames(path))
    assert message in str(info.value) and str(path) in str(info.value)
    src = CaptureSource(path)
    assert list(src) == [] and src.damaged and len(src.problems) == 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no such file"):
        CaptureReader(tmp_path / "nope.pcap")


def test_source_counts_garbage_packets_and_keeps_going(tmp_path: Path) -> None:
    frames = [FRAMES[0], b"\x00" * 10, eth(b"\x47" + b"\x00" * 30), FRAMES[1], eth(b"\x45\x00"), FRAMES[2],
              eth(b"\x45\x00", 0x8100), eth(b"\x00" * 20, 0x0806)]
    src = CaptureSource(_write(tmp_path, "garbage.pcap", pcap_bytes([(T0 + i, f) for i, f in enumerate(frames)])))
    pkts = list(src)
    assert [p.number for p in pkts] == [1, 4, 6]
    assert src.undecodable == 4 and src.non_ip == 1 and src.frames == 8
    assert src.damaged
    assert len(src.problems) == 4  # three described one by one, then the total
    assert src.problems[0].startswith(f"{tmp_path / 'garbage.pcap'}: packet 2: cannot decode")
    assert "4 packets could not be decoded" in src.problems[-1]


def test_source_unknown_link_type(tmp_path: Path) -> None:
    src = CaptureSource(_write(tmp_path, "lt.pcap", pcap_bytes([(T0, FRAMES[0])] * 3, linktype=147)))
    assert list(src) == []
    assert src.damaged and src.unsupported == {147: 3}
    assert "unsupported link type 147" in src.problems[0] and "lt.pcap" in src.problems[0]


@pytest.mark.parametrize("batched", [True, False], ids=["batch path", "packet path"])
def test_a_capture_without_ip_says_so(tmp_path: Path, batched: bool) -> None:
    """ARP and an unknown EtherType only: no flows, not damage, but a line saying why there are none (the
    run said nothing at all)."""
    from dpicore.api import Classifier

    frames = [eth(bytes(28), etype=0x0806), eth(bytes(28), etype=0x1234)] * 3
    path = _write(tmp_path, "arp.pcap", pcap_bytes([(T0 + i, f) for i, f in enumerate(frames)]))
    clf = Classifier(layers=["heuristics"])
    assert list(clf.classify_pcap(path, batched=batched)) == []
    src = clf.last_source
    assert not src.damaged and src.problems == [
        f"{path}: none of its 6 frames is an IP packet (ARP, spanning tree, other EtherTypes or loopback "
        "families): no flows"]
    mixed = _write(tmp_path, "mixed.pcap", pcap_bytes([(T0 + i, f) for i, f in enumerate(frames + FRAMES[:1])]))
    assert len(list(clf.classify_pcap(mixed, batched=batched))) == 1 and clf.last_source.problems == []


def test_pcapng_damaged_interface_block(tmp_path: Path) -> None:
    """An interface description shorter than its fixed fields: dpkt's error becomes ours."""
    from tests.helpers.frames import _block

    good = pcapng_bytes([([(1, None)], [(0, T0, FRAMES[0])])])
    shb_end = struct.unpack_from("<I", good, 4)[0]
    bad_idb = _block("<", 1, b"\x01\x00\x00\x00")
    src = CaptureSource(_write(tmp_path, "idb.pcapng", good[:shb_end] + bad_idb + good[shb_end:]))
    assert list(src) == []
    assert src.damaged and "unreadable data" in src.problems[0] and "packet 1" in src.problems[0]


def test_pcapng_interface_comment_not_in_utf8(tmp_path: Path) -> None:
    """An interface description whose comment option is not UTF-8 (dpkt decodes comments and raised
    UnicodeDecodeError, which crashed both readers): damage, reported as such."""
    from tests.helpers.frames import _block, _opt

    good = pcapng_bytes([([(1, None)], [(0, T0, FRAMES[0])])])
    shb_end = struct.unpack_from("<I", good, 4)[0]
    idb = _block("<", 1, struct.pack("<HHI", 1, 0, 65535) + _opt("<", 1, b"\xff\xfe") + _opt("<", 0, b""))
    src = CaptureSource(_write(tmp_path, "comment.pcapng", good[:shb_end] + idb + good[shb_end:]))
    assert list(src) == []
    assert src.damaged and "unreadable data" in src.problems[0] and "packet 1" in src.problems[0]


# -- captures through a pipe ------------------------------------------------------------------------

def _through_fifo(tmp_path: Path, writes: list[tuple[bytes, float]]) -> tuple[list[tuple[float, int, int]], float]:
    """Batches (seconds after the start, first frame number, frames) of what a writer thread sends
    through a FIFO as ``writes`` (bytes, then a pause in seconds), and when the writer finished."""
    import os
    import threading
    import time

    from dpicore.decode.batch import batches

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    done: list[float] = []

    def writer() -> None:
        with open(fifo, "wb", buffering=0) as w:
            for data, pause in writes:
                w.write(data)
                time.sleep(pause)
            done.append(time.monotonic())

    start = time.monotonic()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    out = [(time.monotonic() - start, b.first, len(b)) for b in batches(str(fifo))]
    thread.join(10)
    return out, done[0] - start


def _frames(n: int) -> list[tuple[float, bytes]]:
    return [(T0 + i * 0.001, eth(udp4(sport=20000 + i, payload=b"y" * 30))) for i in range(n)]


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_frames_before_a_stall_inside_a_record_are_not_held_back(tmp_path: Path, kind: str) -> None:
    """A writer whose writes do not end on a record (a stdio buffer, a relay) and then stalls: the
    whole records that arrived are classified before the stall ends (pcapng waited for the rest of the
    cut block, then for 8,192 frames or the end)."""
    records = _frames(50)
    data = pcap_bytes(records) if kind == "pcap" else pcapng_bytes([([(1, None)], [(0, t, f) for t, f in records])])
    cut = len(data) // 2 + 7
    batches_seen, finished = _through_fifo(tmp_path, [(data[:cut], 1.5), (data[cut:], 0.0)])
    first_time, first, count = batches_seen[0]
    assert first == 1 and 10 < count < 50 and first_time < 1.0, batches_seen
    assert sum(n for _, _, n in batches_seen) == 50 and finished >= 1.5


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_gzip_through_a_pipe_that_stalls(tmp_path: Path, kind: str) -> None:
    """A compressed capture through a pipe (``cat x.pcapng.gz | dpi classify /dev/stdin``) that stalls
    halfway: what was decompressed before the stall is classified before it ends (pcapng.gz waited for
    8,192 frames at a time: one batch, then nothing until the stall ended)."""
    records = [(T0 + i * 0.001, eth(udp4(sport=20000 + i % 500, payload=bytes(i % 300)))) for i in range(30_000)]
    raw = pcap_bytes(records) if kind == "pcap" else pcapng_bytes([([(1, None)], [(0, t, f) for t, f in records])])
    data = gzip_bytes(raw)
    batches_seen, finished = _through_fifo(tmp_path, [(data[:len(data) // 2], 1.5), (data[len(data) // 2:], 0.0)])
    early = sum(n for t, _, n in batches_seen if t < 1.0)
    assert 10_000 < early < 20_000, batches_seen
    assert sum(n for _, _, n in batches_seen) == 30_000 and finished >= 1.5


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_a_trickle_through_a_pipe_is_batched(tmp_path: Path, kind: str) -> None:
    """One record per write, 2 ms apart: a batch per record would cost its fixed cost (~0.4 ms of
    numpy) per frame, a core at a few thousand frames a second; what arrives within PIPE_AGE goes
    together, and the last batch still comes when the writer stops."""
    records = _frames(300)
    if kind == "pcap":
        data = pcap_bytes(records)
        pieces = [data[:24]] + [data[24 + i * (16 + len(f)):24 + (i + 1) * (16 + len(f))] for i, (_, f) in enumerate(records)]
    else:  # the section and interface headers, then the packet blocks (all of one size here)
        blocks = pcapng_bytes([([(1, None)], [(0, t, f) for t, f in records])])
        header = len(pcapng_bytes([([(1, None)], [])]))
        size = (len(blocks) - header) // len(records)
        pieces = [blocks[:header]] + [blocks[header + i * size:header + (i + 1) * size] for i in range(len(records))]
    batches_seen, _ = _through_fifo(tmp_path, [(p, 0.002) for p in pieces])
    assert sum(n for _, _, n in batches_seen) == 300
    # ~0.6 s of writing: ~12 batches of 50 ms (a batch per record before); loose for a loaded machine,
    # where a pause can outlast PIPE_IDLE now and then.
    assert len(batches_seen) < 100, batches_seen


def test_gzip_of_less_than_a_magic_through_a_pipe(tmp_path: Path) -> None:
    """1-3 bytes of gzip'd data from a pipe: GzipFile says it can seek, and going back to its start
    failed on the pipe ("cannot read: File or stream is not seekable"); as from a file, it is no capture."""
    import subprocess
    import sys

    code = "from dpicore.decode import CaptureReader, CaptureError\ntry:\n    CaptureReader('/dev/stdin')\nexcept CaptureError as exc:\n    print(exc.message)"
    out = subprocess.run([sys.executable, "-c", code], input=gzip_bytes(b"ab"), capture_output=True, timeout=60).stdout
    assert out.decode().strip() == "not a pcap or pcapng capture (unknown magic 6162)"


def test_closing_a_gzip_capture_closes_its_file(tmp_path: Path) -> None:
    """GzipFile does not close the file it was given: each reader of a .gz capture left a descriptor."""
    import os

    path = _write(tmp_path, "x.pcap.gz", gzip_bytes(pcap_bytes(list(zip([T0] * len(FRAMES), FRAMES)))))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with CaptureReader(path) as reader:
            assert len(list(reader)) == len(FRAMES)
    with pytest.raises(CaptureError):
        CaptureReader(_write(tmp_path, "bad.gz", b"\x1f\x8b" + b"\x00" * 30))  # not really gzip
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("then", ["statistics block", "new section", "dribble"])
def test_frames_before_a_stall_are_not_held_back_by_what_follows_them(tmp_path: Path, then: str) -> None:
    """Whole frames, then something that is not a whole frame, then the writer stalls: a statistics
    block or a new section header (whole, but no packet: reading it and then the next header waited),
    or a few more bytes of the next block within the idle window (they reset the wait, and the
    read then waited for the rest)."""
    records = _frames(20)
    data = pcapng_bytes([([(1, None)], [(0, t, f) for t, f in records])])
    isb = struct.pack("<II", 5, 24) + struct.pack("<III", 0, 0, 0) + struct.pack("<I", 24)
    section = pcapng_bytes([([(1, None)], [])])
    more = pcapng_bytes([([(1, None)], [(0, T0 + 1, FRAMES[0])])])[len(section):]  # one more packet block
    if then == "statistics block":
        writes = [(data + isb, 1.5), (more, 0.0)]
    elif then == "new section":
        writes = [(data + section, 1.5), (more, 0.0)]
    else:
        writes = [(data + more[:30], 0.002), (more[30:40], 1.5), (more[40:], 0.0)]
    batches_seen, finished = _through_fifo(tmp_path, writes)
    first_time, first, count = batches_seen[0]
    assert (first, count) == (1, 20) and first_time < 1.0, batches_seen
    assert sum(n for _, _, n in batches_seen) == 21 and finished >= 1.5


def test_nanosecond_pcapng_times_equal_the_nanosecond_pcap_ones(tmp_path: Path) -> None:
    """One packet at 1679647550.087772420 s, as a nanosecond pcap and as a pcapng with if_tsresol 9: the
    pcapng reader multiplied the whole tick count by the inexact 1e-9 and landed a float that records
    round to .087773 (5 of the 12 nanosecond pcapng files of the corpus were a microsecond off when
    converted to pcap; found by differential fuzzing)."""
    ticks = 1679647550087772420
    frame = eth(udp4(payload=b"x" * 20))
    sec, ns = divmod(ticks, 10**9)
    pcap = tmp_path / "ns.pcap"
    pcap.write_bytes(b"\x4d\x3c\xb2\xa1" + struct.pack("<HHiIII", 2, 4, 0, 0, 65535, 1)
                     + struct.pack("<IIII", sec, ns, len(frame), len(frame)) + frame)

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    pcapng = tmp_path / "ns.pcapng"
    pcapng.write_bytes(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
                       + block(1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HHB3x", 9, 1, 9) + b"\0" * 4)
                       + block(6, struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame))
                               + frame))
    (a,), (b,) = list(read_frames(str(pcap))), list(read_frames(str(pcapng)))
    assert a.ts == b.ts and f"{b.ts:.6f}" == "1679647550.087772"
