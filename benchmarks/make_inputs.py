"""Make the throughput benchmark's inputs (kept outside the repository, in a cache directory).

    .venv/bin/python benchmarks/make_inputs.py [--cache-dir DIR] [--force]

Writes, as Ethernet + 802.1Q pcap files (µs timestamps), to
``~/.cache/dpicore-bench`` (or ``$DPICORE_BENCH_CACHE``):

* ``corpus_x10.pcap``: every IP packet of the shared nDPI corpus
  (``../shared/corpus/ndpi/pcap``, files in name order) concatenated, the
  whole repeated 10 times, copy *k* tagged VLAN *k+1* so each copy's flows
  are new flows;
* ``realclients_large.pcap``: the real-client captures made by the
  project's generator (``scripts/make_captures.py``: real servers and
  clients on loopback, ``tests/captures/realclients/*.pcap`` and
  ``samples/sample.pcap``) concatenated and repeated until ~1 M packets,
  copy *k* tagged VLAN *k+1*.  One run of the generator records ~1,500
  packets in about a minute of real client sessions, so ~1 M packets would
  take about 11 hours of recording; the recorded sessions are replicated
  instead.
* ``realclients_small.pcap``: the same with a tenth of the copies, to check
  that peak memory does not grow with the file's size.

``throughput.py --pcapng`` also writes each input's frames as pcapng
(:func:`pcapng_of`: ``corpus_x10.pcapng`` …), the format dumpcap and
Wireshark write by default.

Every packet is re-framed from its IP header on (link types differ between
the source files; non-IP frames are left out).  Time never goes back: each
source file starts one second after the packet before it, and every packet
keeps its gap to the previous one, clamped to 0..60 s (some corpus files
jump by years, or back).  A file is rebuilt only when missing (or with
``--force``); a ``.json`` beside it records its packet count.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

from dpicore.corpus import corpus_dir
from dpicore.decode import CaptureSource

ROOT = Path(__file__).resolve().parent.parent
CORPUS_COPIES = 10
#: Packets aimed at for the large real-client input.
LARGE_PACKETS = 1_000_000
#: Longest gap kept between two packets of a source file, in seconds.
MAX_GAP = 60.0
MACS = bytes.fromhex("020000000002" "020000000001")
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)  # µs, Ethernet


def cache_dir(given: str | None = None) -> Path:
    path = Path(given or os.environ.get("DPICORE_BENCH_CACHE") or Path.home() / ".cache" / "dpicore-bench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def absent(tool: str, paths: list[Path]) -> bool:
    """Whether a capture a benchmark script was asked to read is missing (said on stderr, with how to
    make the default inputs)."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"{tool}: no such capture: {', '.join(missing)} (make them with benchmarks/make_inputs.py)",
              file=sys.stderr)
    return bool(missing)


def realclient_sources() -> list[Path]:
    """The generator's captures, as committed (made by scripts/make_captures.py)."""
    return sorted((ROOT / "tests" / "captures" / "realclients").glob("*.pcap")) + [ROOT / "samples" / "sample.pcap"]


def corpus_sources() -> list[Path]:
    corpus = corpus_dir()
    if corpus is None:
        sys.exit("the nDPI corpus (../shared/corpus/ndpi) is absent; set DPI_CORPUS")
    return sorted((corpus / "pcap").iterdir())


def ip_packets(path: Path) -> list[tuple[float, bytes, int]]:
    """(timestamp, IP-layer bytes, IP length on the wire) of every IP packet the decoder reads."""
    out = []
    for pkt in CaptureSource(path):
        ip = pkt.ip
        if not ip:
            continue
        wire = ((ip[2] << 8 | ip[3]) if ip[0] >> 4 == 4 else 40 + (ip[4] << 8 | ip[5])) if len(ip) >= 6 else len(ip)
        out.append((pkt.ts, ip, max(wire, len(ip))))
    return out


def frames(sources: list[list[tuple[float, bytes, int]]], copies: int) -> Iterator[tuple[float, bytes, int]]:
    """Every source's packets, ``copies`` times, VLAN ``k+1`` for copy ``k``, time never going back.

    Each packet keeps its gap to the previous one, clamped to 0..MAX_GAP
    seconds: some corpus files jump by years (a clock set late) or back.
    """
    clock = 0.0
    for k in range(copies):
        tag = struct.pack("!HH", 0x8100, (k + 1) & 0x0FFF)
        for packets in sources:
            clock += 1.0
            prev = packets[0][0] if packets else 0.0
            for ts, ip, wire in packets:
                clock += min(max(ts - prev, 0.0), MAX_GAP)
                prev = ts
                etype = b"\x08\x00" if ip[0] >> 4 == 4 else b"\x86\xdd"
                yield clock, MACS + tag + etype + ip, 18 + wire


def write_pcap(path: Path, records: Iterable[tuple[float, bytes, int]]) -> int:
    """Write records; returns how many.  Written to a temporary name first, so a cut run leaves no input."""
    tmp = path.with_suffix(".part")
    n = 0
    base = 1_700_000_000  # the capture's first second (timestamps above are relative)
    with tmp.open("wb") as fh:
        fh.write(PCAP_HEADER)
        pack = struct.Struct("<IIII").pack
        for ts, frame, wire in records:
            usec = round(ts * 1e6)
            fh.write(pack(base + usec // 1_000_000, usec % 1_000_000, len(frame), wire))
            fh.write(frame)
            n += 1
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps({"packets": n}) + "\n")
    return n


def packets_in(path: Path) -> int:
    return int(json.loads(path.with_suffix(".json").read_text())["packets"])


def pcapng_of(pcap: Path, force: bool = False) -> Path:
    """The same frames as ``pcap`` (one of the files above, or a cut of one) as pcapng, beside it (made
    when missing): a section header, one Ethernet interface (µs, the default resolution) and an
    enhanced packet block per frame, as dumpcap writes them.  The .json beside the pcap serves both."""
    out = pcap.with_suffix(".pcapng")
    if out.exists() and not force:
        return out
    tmp = out.with_suffix(".part")
    shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    idb = struct.pack("<HHI", 1, 0, 262144)
    epb = struct.Struct("<IIIIIII")
    with pcap.open("rb") as src, tmp.open("wb") as fh:
        if src.read(24) != PCAP_HEADER:
            sys.exit(f"{pcap}: not one of this script's pcap files")
        fh.write(struct.pack("<II", 0x0A0D0D0A, 28) + shb + struct.pack("<I", 28))
        fh.write(struct.pack("<II", 1, 20) + idb + struct.pack("<I", 20))
        while head := src.read(16):
            sec, usec, caplen, wire = struct.unpack("<IIII", head)
            frame = src.read(caplen)
            pad = -caplen % 4
            length = 32 + caplen + pad
            ticks = sec * 1_000_000 + usec
            fh.write(epb.pack(6, length, 0, ticks >> 32, ticks & 0xFFFFFFFF, caplen, wire))
            fh.write(frame + bytes(pad) + struct.pack("<I", length))
    tmp.replace(out)
    return out


def made(out: Path, force: bool = False) -> bool:
    """Whether ``out`` is there to be used as it is (written whole: its packet count beside it)."""
    return out.exists() and out.with_suffix(".json").exists() and not force


def make(out: Path, sources: Callable[[], list[Path]], copies: Callable[[int], int], force: bool) -> Path:
    """``out`` from ``sources()`` repeated ``copies(packets of one copy)`` times.  Both are only called
    when ``out`` must be made: a cached input needs no corpus, and its sources are not decoded."""
    if made(out, force):
        return out
    paths = sources()
    decoded = [ip_packets(p) for p in paths]
    per_copy = sum(len(x) for x in decoded)
    n = copies(per_copy)
    if n > 4094:
        sys.exit(f"{out.name}: {n} copies need more VLAN ids than 802.1Q has")
    count = write_pcap(out, frames(decoded, n))
    print(f"wrote {out}: {n} copies of {len(paths)} files, {count:,} packets, "
          f"{out.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
    return out


#: The benchmark inputs, in the order they are made (realclients_small's size follows realclients_large's).
NAMES = ("corpus_x10", "realclients_large", "realclients_small")


def make_all(cache: Path, force: bool = False, names: Iterable[str] = NAMES) -> dict[str, Path]:
    """The benchmark inputs ``names`` (every one by default), by name; each made when missing.  Only
    corpus_x10 needs the nDPI corpus, and only to be made."""
    wanted = set(names)
    out = {}
    if "corpus_x10" in wanted:
        out["corpus_x10"] = make(cache / "corpus_x10.pcap", corpus_sources, lambda _: CORPUS_COPIES, force)
    if wanted & {"realclients_large", "realclients_small"}:
        large = make(cache / "realclients_large.pcap", realclient_sources,
                     lambda per_copy: max(1, round(LARGE_PACKETS / per_copy)), force)
        if "realclients_large" in wanted:
            out["realclients_large"] = large
    if "realclients_small" in wanted:  # a tenth of realclients_large
        out["realclients_small"] = make(cache / "realclients_small.pcap", realclient_sources,
                                        lambda per_copy: max(1, round(packets_in(large) / per_copy / 10)), force)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", default=None, help="where the inputs go (default ~/.cache/dpicore-bench)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the files exist")
    args = ap.parse_args(argv)
    for name, path in make_all(cache_dir(args.cache_dir), args.force).items():
        print(f"{name}\t{path}\t{packets_in(path)} packets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
