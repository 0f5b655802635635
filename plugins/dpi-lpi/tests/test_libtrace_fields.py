"""dpicore's packets carry what real libtrace hands to lpi_update_data (runs where libtrace is installed).

libprotoident reads its inputs through libtrace: the payload length from
``trace_get_payload_length`` (IP length minus headers), the payload from
``trace_get_payload_from_tcp/udp``, the ports, the TCP sequence number and
flags.  The layer reads the same things from dpicore's Packet.  A small C
program over the real libtrace (tests/libtrace_fields.c) prints them per
packet for every corpus capture, and they must equal dpicore's.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dpicore.corpus import captures
from dpicore.decode.source import packets_from_pcap
from dpicore.model import TCP

pytestmark = pytest.mark.corpus

SOURCE = Path(__file__).resolve().parent / "libtrace_fields.c"


@pytest.fixture(scope="module")
def libtrace_fields(tmp_path_factory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    target = tmp_path_factory.mktemp("libtrace") / "libtrace_fields"
    done = subprocess.run([gcc, "-O2", "-o", str(target), str(SOURCE), "-ltrace"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("libtrace is not installed (Debian: apt-get install libtrace3-dev): "
                    + (done.stderr.strip().splitlines() or [""])[-1])
    return target


def test_packet_fields_equal_libtrace_s(libtrace_fields, corpus, agreement, tmp_path) -> None:
    compared = 0
    mismatches: list[str] = []
    for path, _labels in captures(corpus):
        pcap = agreement._classic_pcap(path, tmp_path)
        done = subprocess.run([str(libtrace_fields), str(pcap)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        ours = {pkt.number: pkt for pkt in packets_from_pcap(path)}
        for line in done.stdout.splitlines():
            number, proto, sport, dport, psize, seq, flags, head = line.split()
            pkt = ours.get(int(number))
            if pkt is None or pkt.fragment:
                mismatches.append(f"{path.name}#{number}: not decoded by dpicore")
                continue
            # With no payload on the wire lpi_update_data reads no bytes (libtrace may point at padding).
            mine = (pkt.proto, pkt.sport, pkt.dport, pkt.payload_len, pkt.seq if pkt.proto == TCP else 0,
                    pkt.tcp_flags & 0x1F, bytes(pkt.payload[:4]).ljust(4, b"\0").hex() if pkt.payload_len else "")
            theirs = (int(proto), int(sport), int(dport), int(psize), int(seq), int(flags),
                      head if int(psize) else "")
            compared += 1
            if mine != theirs:
                mismatches.append(f"{path.name}#{number}: dpicore {mine} libtrace {theirs}")
    print(f"compared {compared} packets, {len(mismatches)} differ")
    assert compared > 10_000
    assert not mismatches, "\n".join(mismatches[:25])
