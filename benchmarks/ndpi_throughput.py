"""Throughput of the nDPI layer next to ndpiReader 4.2 on the same capture, in one run.

    .venv/bin/python benchmarks/ndpi_throughput.py [CAPTURE] [--copies N]

Without CAPTURE the script writes a raw-IP capture of the whole nDPI corpus
(``../shared/corpus/ndpi``) repeated N times (default 10), each copy's
addresses shifted so its flows are new flows, and times both tools on it:

* dpicore: ``Classifier(layers=["ndpi"])`` over the file (decode, flow table,
  the nDPI layer), setup excluded (printed separately); and the same engine
  with no layer, to show how much of that time is the layer's;
* ndpiReader: ``ndpiReader -q -i FILE`` as a subprocess, wall clock, which
  includes its ~70 ms setup; the line below subtracts that setup, measured by
  running it on a one-packet capture of the same kind.

The ratio is dpicore packets/s over ndpiReader packets/s.  Numbers are this
machine's, one core; run it a few times.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dpkt

from dpicore import Classifier
from dpicore.corpus import corpus_dir
from dpicore.decode import CaptureSource

LINKTYPE_RAW = 101


def shifted(ip: bytes, copy: int) -> bytes:
    """The IP packet with the second byte of both addresses XORed with ``copy`` (a new flow per copy)."""
    if not copy:
        return ip
    b = bytearray(ip)
    if b[0] >> 4 == 4 and len(b) >= 20:
        b[13] ^= copy & 0xFF
        b[17] ^= copy & 0xFF
    elif b[0] >> 4 == 6 and len(b) >= 40:
        b[9] ^= copy & 0xFF
        b[25] ^= copy & 0xFF
    return bytes(b)


def write_corpus_capture(out: Path, copies: int) -> int:
    """A raw-IP pcap of every corpus packet, ``copies`` times; returns the packet count."""
    corpus = corpus_dir()
    if corpus is None:
        sys.exit("the nDPI corpus (../shared/corpus/ndpi) is absent: pass a CAPTURE")
    packets = [pkt for path in sorted((corpus / "pcap").iterdir()) for pkt in CaptureSource(path)]
    count = 0
    with out.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=LINKTYPE_RAW, snaplen=65535)
        t = 1_600_000_000.0
        for copy in range(copies):
            for pkt in packets:
                if not pkt.ip:
                    continue
                t += 0.0001
                writer.writepkt(shifted(pkt.ip, copy), ts=t)
                count += 1
    return count


def time_dpicore(path: Path, layers: list[str]) -> tuple[int, float, float]:
    """(packets, seconds, setup seconds) for the engine running ``layers``."""
    t0 = time.perf_counter()
    clf = Classifier(layers=layers)
    setup = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        for _ in clf.classify_pcap(path):
            pass
        elapsed = time.perf_counter() - t0
        return clf.engine.stats.packets, elapsed, setup
    finally:
        clf.close()


def time_ndpireader(reader: str, path: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([reader, "-q", "-i", str(path)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("capture", nargs="?", type=Path)
    ap.add_argument("--copies", type=int, default=10, help="corpus copies in the generated capture")
    args = ap.parse_args()
    reader = shutil.which("ndpiReader")
    if reader is None:
        sys.exit("ndpiReader not found: apt-get install libndpi-bin")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        if args.capture is None:
            path = tmpdir / "corpus.pcap"
            n = write_corpus_capture(path, args.copies)
            print(f"capture: nDPI corpus x{args.copies}, {n:,} packets (raw IP)")
        else:
            path = args.capture
            print(f"capture: {path}")
        one = tmpdir / "one.pcap"
        with path.open("rb") as src:
            rd = dpkt.pcap.UniversalReader(src)
            ts, frame = next(iter(rd))
            linktype = rd.datalink()
        with one.open("wb") as fh:
            dpkt.pcap.Writer(fh, linktype=linktype, snaplen=65535).writepkt(frame, ts=ts)
        packets, ours, setup = time_dpicore(path, ["ndpi"])
        _, bare, _ = time_dpicore(path, [])
        theirs = time_ndpireader(reader, path)
        fixed = min(time_ndpireader(reader, one) for _ in range(3))
    ours_pps = packets / ours
    wall_pps = packets / theirs
    net_pps = packets / max(theirs - fixed, 1e-6)
    print(f"dpicore --layers ndpi : {ours_pps:12,.0f} packets/s  ({packets:,} packets in {ours:.3f} s; "
          f"setup {setup * 1000:.0f} ms not counted)")
    print(f"dpicore, no layer     : {packets / bare:12,.0f} packets/s  (decode + flow table only: the "
          f"nDPI layer's own share is {max(ours - bare, 0.0) / ours:.0%} of its run)")
    print(f"ndpiReader -q (wall)  : {wall_pps:12,.0f} packets/s  ({theirs:.3f} s incl. setup)   "
          f"ratio {ours_pps / wall_pps:.3f}")
    print(f"ndpiReader -q (net)   : {net_pps:12,.0f} packets/s  (setup {fixed * 1000:.0f} ms subtracted)   "
          f"ratio {ours_pps / net_pps:.3f}")


if __name__ == "__main__":
    main()
