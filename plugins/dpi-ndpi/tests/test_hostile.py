"""Hostile input must not crash the process: nDPI parses the IP bytes itself.

The fuzzing runs in a child process, so a crash inside libndpi (a segfault
would take pytest down with it) shows up here as a failed test with the
child's exit status.
"""

from __future__ import annotations

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
