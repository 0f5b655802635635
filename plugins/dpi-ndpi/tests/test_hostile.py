"""Hostile input must not crash the process: nDPI parses the IP bytes itself.

The fuzzing runs in a child process, so a crash inside libndpi (a segfault
would take pytest down with it) shows up here as a failed test with the
child's exit status.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


FUZZ = textwrap.dedent(r'''
    import random, struct, sys
    import dpkt
    from dpicore import Classifier
    from dpicore.api import synthetic_packets
    from dpicore.corpus import corpus_dir
    from dpicore.decode import CaptureSource
    from dpicore.model import Packet, TCP, UDP
    from dpi_ndpi import Detector, load

    rng = random.Random(20240613)
    _, abi = load()
    det = Detector(abi)

    hello = bytes.fromhex("16030100") + bytes([0x50]) + bytes([1, 0, 0, 0x4c, 3, 3]) + bytes(range(32)) + \
        bytes([0, 0, 2, 0x13, 1, 1, 0, 0, 0x21, 0, 0, 0, 0x1d, 0, 0x1b, 0, 0, 0x18]) + b"www.hostile.example" + b"\x00"
    bases = [p.ip for payload, proto, port in (
                 (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", TCP, 80), (hello, TCP, 443),
                 (bytes(dpkt.dns.DNS(id=1, qd=[dpkt.dns.DNS.Q(name="a.b")])), UDP, 53),
                 (b"SSH-2.0-x\r\n", TCP, 22), (b"\x00" * 40, UDP, 3478))
             for p in synthetic_packets(payload, proto, 40000, port, False)]
    corpus = corpus_dir()
    if corpus is not None:
        for name in ("tls_long_cert.pcap", "quic-mvfst-22.pcap", "dns-google-nsid.pcapng", "sip.pcap"):
            bases.extend(p.ip for p in CaptureSource(corpus / "pcap" / name))

    def fix_length(b):
        if b and b[0] >> 4 == 4 and len(b) >= 20:
            b[2:4] = struct.pack("!H", len(b))
        elif b and b[0] >> 4 == 6 and len(b) >= 40:
            b[4:6] = struct.pack("!H", len(b) - 40)
        return b

    def mutants():
        for base in bases:
            yield base
            for cut in (1, 10, 20, 21, 33, 40, 41, len(base) - 1):
                yield base[:cut]                                   # truncated
                yield bytes(fix_length(bytearray(base[:cut])))     # truncated, lengths made consistent
        for _ in range(30000):
            b = bytearray(rng.choice(bases))
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            if rng.random() < 0.3:
                b = b[:rng.randrange(len(b) + 1)]
            if rng.random() < 0.2:
                b += bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
            if rng.random() < 0.7:
                fix_length(b)
            yield bytes(b)
        for _ in range(3000):                                      # pure garbage
            head = rng.choice((b"\x45", b"\x46", b"\x4f", b"\x60", b""))
            yield head + bytes(rng.randrange(256) for _ in range(rng.randrange(120)))

    fed = 0
    flows = [det.new_flow(rng.choice((TCP, UDP, 1))) for _ in range(64)]
    for i, ip in enumerate(mutants()):
        k = rng.randrange(len(flows))
        pkt = Packet(1.0 + i * 0.001, 4, b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", rng.choice((TCP, UDP, 1)),
                     rng.randrange(65536), rng.randrange(65536), ip=rng.choice((ip, bytearray(ip), memoryview(ip))))
        flows[k].feed(pkt)
        fed += 1
        if flows[k].done or rng.random() < 0.02:
            if not flows[k].done:
                flows[k].giveup()
            flows[k].release()
            flows[k] = det.new_flow(rng.choice((TCP, UDP, 1)))
    for f in flows:
        f.release()
    det.close()

    # The same garbage through the whole pipeline, as packets a caller hands in.
    with Classifier(layers=["ndpi"]) as clf:
        pkts = [Packet(float(i), 4, bytes([10, 0, 0, i % 7]), b"\x0a\x00\x00\x63", rng.choice((TCP, UDP)),
                       1000 + i % 5, 80, ip=ip) for i, ip in zip(range(5000), mutants())]
        n = sum(1 for _ in clf.classify_packets(pkts))
    print(f"fed={fed} flows={n}")
''')


def test_hostile_packets_do_not_crash(abi: object) -> None:
    run = subprocess.run([sys.executable, "-c", FUZZ], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"child exited with {run.returncode}: {run.stderr[-2000:]}"
    fed = int(run.stdout.split("fed=")[1].split()[0])
    assert fed > 30000


# -- faults of libndpi 4.2 that fuzzing found (2026-11-29), each in a child process ----------------------

import struct  # noqa: E402
from pathlib import Path  # noqa: E402

_DPI = [sys.executable, "-m", "dpicore.cli"]


def _pcap(path: Path, frames: list[bytes]) -> Path:
    """A pcap of raw IP frames (DLT_RAW), one every 50 ms."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for i, frame in enumerate(frames):
        out.append(struct.pack("<IIII", 1000, 50000 * i, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
    return path


def _ipv6_udp(payload: bytes, payload_length: int | None = None) -> bytes:
    src, dst = bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "02")
    l4 = struct.pack("!HHHH", 50822, 443, 8 + len(payload), 0) + payload
    return struct.pack("!IHBB", 6 << 28, len(l4) if payload_length is None else payload_length, 17, 64) + src + dst + l4


def test_a_quic_flow_then_a_packet_with_ipv6_payload_length_0_does_not_crash(abi: object, tmp_path: Path) -> None:
    """A gQUIC Initial with no parsable CHLO keeps the flow in nDPI's extra dissection; the next packet
    says IPv6 payload length 0 (our decoder reads it as a jumbogram: the captured bytes), nDPI 4.2
    believes the field, finds no UDP header and ndpi_search_quic_extra reads a NULL payload: SIGSEGV,
    from an ordinary capture file."""
    gquic = bytes.fromhex("c35130343650752434271815fbf000000001a53b56196a08e1ad8ee7") + b"\r\n" + b"1" * 1320
    cap = _pcap(tmp_path / "quic.pcap", [_ipv6_udp(gquic), _ipv6_udp(b"\x00" * 8, payload_length=0)])
    run = subprocess.run(_DPI + ["classify", str(cap), "-l", "ndpi", "-f", "jsonl"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-1500:]}"
    (record,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert record["protocol"] == "QUIC" and record["packets"] == 2


def test_a_dns_name_walking_past_64_kb_does_not_hang(abi: object, tmp_path: Path) -> None:
    """One 65,535-byte UDP datagram to port 53 of 0x3f bytes: nDPI 4.2's DNS dissector walks the name
    with a 16-bit offset that wraps to the start, for ever (ntop/nDPI#1803): `dpi classify` hung."""
    dns = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x3f" * (65535 - 28 - 12)
    udp = struct.pack("!HHHH", 40000, 53, 8 + len(dns), 0) + dns
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2])) + udp
    cap = _pcap(tmp_path / "dns.pcap", [ip])
    run = subprocess.run(_DPI + ["classify", str(cap), "-l", "ndpi", "-f", "jsonl"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-1500:]}"
    assert len(run.stdout.splitlines()) == 1


BITTORRENT = textwrap.dedent(r'''
    import random, struct
    from dpicore import Classifier
    from dpicore.model import Packet, TCP

    A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])

    def tcp(sp, dp, seq, payload=b""):
        return struct.pack("!HHIIBBHHH", sp, dp, seq, 1, 5 << 4, 0x18, 65535, 0, 0) + payload

    def ipv4(l4):
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, 6, 0, A, B) + l4

    def packet(ts, sp, dp, l4, payload):
        src, dst = (A, B) if sp != 9999 else (B, A)
        return Packet(ts, 4, src, dst, TCP, sp, dp, 0x18, 20 + len(l4), payload, len(payload), ipv4(l4))

    # A short BitTorrent handshake puts the host pair in nDPI's module-wide cache; a later TCP flow of the
    # pair is named BitTorrent from it at its 9th packet and stays in extra dissection; a packet of it
    # with no TCP header (a bare IPv4 header, as a caller may hand in) then reached search_bittorrent_again.
    bt = b"\x13BitTorrent protocol" + b"\r\n\xc0\x14\x009\xc0\x09"
    packets = [packet(1.0, 34746, 8080, tcp(34746, 8080, 1, bt), bt)]
    bare = Packet(2.0, 4, A, B, TCP, 40000, 9999, 0, 20, b"", 0, ipv4(b""))
    packets.append(bare)
    rnd = random.Random(1)
    for i in range(9):
        sp, dp = (40000, 9999) if i % 2 == 0 else (9999, 40000)
        payload = bytes(rnd.randrange(256) for _ in range(8))
        packets.append(packet(2.1 + i * 0.1, sp, dp, tcp(sp, dp, 1000 + i * 8, payload), payload))
    packets.append(Packet(3.5, 4, A, B, TCP, 40000, 9999, 0, 20, b"", 0, ipv4(b"")))
    with Classifier(layers="ndpi") as clf:
        flows = list(clf.classify_packets(packets))
    print("flows", len(flows))
''')


def test_a_bittorrent_flow_then_a_packet_without_its_tcp_header_does_not_crash(abi: object) -> None:
    run = subprocess.run([sys.executable, "-c", BITTORRENT], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"child exited with {run.returncode}: {run.stderr[-2000:]}"
    assert "flows 2" in run.stdout
