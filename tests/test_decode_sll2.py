"""Linux cooked v2 (SLL2, link type 276): what `tcpdump -i any` writes since
libpcap 1.10, and what a peer tool silently turns into zero flows.

One capture is built here; the other is the real `tcpdump -i any` capture
made by scripts/make_captures.py (tests/captures/realclients/any_sll2.pcap).
Both are checked against the same frames re-wrapped in Ethernet: SLL2 must
give exactly the flows Ethernet gives.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from dpicore.decode import CaptureReader, CaptureSource
from dpicore.decode.packets import DLT_EN10MB, DLT_LINUX_SLL2
from tests.helpers.frames import (ACK, PSH, SYN, ETH_DST, ETH_SRC, ip6, pcap_bytes, pcapng_bytes, sll2, tcp,
                                  tcp4, udp4)

REAL = Path(__file__).resolve().parent / "captures" / "realclients" / "any_sll2.pcap"
DPI = [sys.executable, "-m", "dpicore.cli"]
T0 = 1_700_000_000.0


def sll2_to_ethernet(frame: bytes) -> bytes:
    """The same packet behind an Ethernet header (SLL2's protocol field is the EtherType)."""
    return ETH_DST + ETH_SRC + frame[:2] + frame[20:]


def built_frames() -> list[tuple[float, bytes]]:
    http = b"GET /index.html HTTP/1.1\r\nHost: sll2.test\r\n\r\n"
    dns = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04sll2\x04test\x00\x00\x01\x00\x01"
    frames = [
        sll2(tcp4("127.0.0.1", 41000, "127.0.0.1", 8080, SYN, seq=10), ifindex=1),
        sll2(tcp4("127.0.0.1", 8080, "127.0.0.1", 41000, SYN | ACK, seq=50), ifindex=1),
        sll2(tcp4("127.0.0.1", 41000, "127.0.0.1", 8080, PSH | ACK, http, seq=11), ifindex=1),
        sll2(udp4("192.168.1.10", 53000, "192.168.1.1", 53, dns), ifindex=2),
        sll2(ip6("fe80::1", "fe80::2", tcp(50000, 22, PSH | ACK, 1, 0, b"SSH-2.0-OpenSSH_9.2\r\n"), 6), 0x86DD,
             ifindex=3),
        sll2(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20, 0x0806, ifindex=2),   # ARP: no flow
        sll2(struct.pack("!HH", 20, 0x0800) + udp4("10.9.9.9", 5000, "10.9.9.10", 5001, b"v"), 0x8100),
    ]
    return [(T0 + i * 0.01, f) for i, f in enumerate(frames)]


def classify(path: Path, cwd: Path) -> list[dict]:
    proc = subprocess.run(DPI + ["classify", str(path), "-f", "jsonl"], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def comparable(records: list[dict]) -> list[tuple]:
    """Records without byte counts (an SLL2 header is 6 bytes longer than Ethernet's)."""
    return [(r["transport"], r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["vlan"], r["packets"],
             r["c2s_packets"], r["s2c_packets"], r["first_seen"], r["last_seen"], r["protocol"], r["source"])
            for r in records]


@pytest.mark.parametrize("container", ["pcap", "pcapng"])
def test_built_sll2_capture_gives_the_flows_of_ethernet(tmp_path: Path, container: str) -> None:
    recs = built_frames()
    eth_recs = [(ts, sll2_to_ethernet(f)) for ts, f in recs]
    if container == "pcap":
        (tmp_path / "any.pcap").write_bytes(pcap_bytes(recs, linktype=DLT_LINUX_SLL2))
    else:
        (tmp_path / "any.pcap").write_bytes(pcapng_bytes([([(DLT_LINUX_SLL2, 9)], [(0, ts, f) for ts, f in recs])]))
    (tmp_path / "eth.pcap").write_bytes(pcap_bytes(eth_recs, linktype=DLT_EN10MB))
    src = CaptureSource(tmp_path / "any.pcap")
    packets = list(src)
    assert len(packets) == 6 and src.non_ip == 1 and not src.problems
    assert [p.vlan for p in packets] == [0, 0, 0, 0, 0, 20]
    sll2_records = classify(tmp_path / "any.pcap", tmp_path)
    assert len(sll2_records) == 4
    assert comparable(sll2_records) == comparable(classify(tmp_path / "eth.pcap", tmp_path))
    http = next(r for r in sll2_records if r["dst_port"] == 8080)
    assert (http["src_port"], http["packets"], http["c2s_packets"]) == (41000, 3, 2)
    assert http["bytes"] == sum(len(f) for _, f in recs[:3])


@pytest.mark.skipif(not REAL.exists(), reason="tests/captures/realclients/any_sll2.pcap not recorded yet")
def test_real_tcpdump_any_capture(tmp_path: Path) -> None:
    with CaptureReader(REAL) as reader:
        frames = list(reader)
    assert {f.linktype for f in frames} == {DLT_LINUX_SLL2}
    src = CaptureSource(REAL)
    packets = list(src)
    assert not src.problems and src.undecodable == 0
    assert len(packets) + src.non_ip == len(frames), "every frame is an IP packet or counted as non-IP"
    eth = tmp_path / "as_ethernet.pcap"
    eth.write_bytes(pcap_bytes([(f.ts, sll2_to_ethernet(f.data)) for f in frames], linktype=DLT_EN10MB))
    records = classify(REAL, tmp_path)
    assert len(records) >= 8, "the capture holds 3 HTTP, 4 DNS and 1 TLS connections"
    assert comparable(records) == comparable(classify(eth, tmp_path))
    assert {r["dst_port"] for r in records} >= {8001, 15354, 4434}
