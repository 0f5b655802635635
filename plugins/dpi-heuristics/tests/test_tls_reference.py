"""JA3 and SNI against Wireshark's: every ClientHello we fingerprint in the corpus, tshark fingerprints
the same way.

tshark (4.0 in Debian 12) computes ``tls.handshake.ja3`` and
``dtls.handshake.ja3`` itself and decrypts QUIC Initials, so it is an
independent implementation of the same parsing.  The corpus captures are
concatenated with mergecap and read by one tshark process.  tshark comes from
plugins/dpi-heuristics/system-packages.txt; without it this test skips.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from dpicore import Classifier
from dpicore.model import format_ip

FIELDS = ["ip.src", "ipv6.src", "tcp.srcport", "udp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport", "udp.dstport",
          "tls.handshake.ja3", "dtls.handshake.ja3", "tls.handshake.extensions_server_name",
          "dtls.handshake.extensions_server_name"]
Endpoints = tuple[tuple[str, int], tuple[str, int]]


def _last(value: str) -> str:
    return value.split(",")[-1]


def tshark_hellos(corpus: Path, tmp: Path) -> dict[Endpoints, list[tuple[str, str]]]:
    """Unordered endpoints -> [(ja3, sni)] of every ClientHello tshark finds in the corpus."""
    merged = tmp / "corpus.pcapng"
    subprocess.run(["mergecap", "-a", "-w", str(merged), *map(str, sorted((corpus / "pcap").iterdir()))],
                   check=True, capture_output=True)
    cmd = ["tshark", "-n", "-r", str(merged), "-Y", "tls.handshake.type == 1 or dtls.handshake.type == 1",
           "-T", "fields", "-E", "separator=|", *[arg for f in FIELDS for arg in ("-e", f)]]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    hellos: dict[Endpoints, list[tuple[str, str]]] = defaultdict(list)
    for line in out.splitlines():
        f = dict(zip(FIELDS, line.split("|")))
        src = _last(f["ipv6.src"] or f["ip.src"])
        dst = _last(f["ipv6.dst"] or f["ip.dst"])
        sport = (f["tcp.srcport"] or f["udp.srcport"]).split(",")[0]
        dport = (f["tcp.dstport"] or f["udp.dstport"]).split(",")[0]
        ja3 = (f["tls.handshake.ja3"] or f["dtls.handshake.ja3"]).split(",")[0]
        sni = (f["tls.handshake.extensions_server_name"] or f["dtls.handshake.extensions_server_name"]).split(",")[0]
        if sport and dport and ja3:
            ends = tuple(sorted([(src, int(sport)), (dst, int(dport))]))
            hellos[ends].append((ja3, sni))  # type: ignore[index]
    return hellos


@pytest.mark.corpus
def test_ja3_and_sni_match_wireshark(corpus: Path, tmp_path: Path) -> None:
    if not (shutil.which("tshark") and shutil.which("mergecap")):
        pytest.skip("tshark/mergecap not installed (apt-get install tshark; see system-packages.txt)")
    theirs = tshark_hellos(corpus, tmp_path)
    compared, wrong, unknown_to_tshark = 0, [], []
    with Classifier(layers=["heuristics"]) as clf:
        for path in sorted((corpus / "pcap").iterdir()):
            for flow in clf.classify_pcap(path):
                meta = flow.verdict.metadata if flow.verdict else {}
                if "ja3" not in meta:
                    continue
                ends = tuple(sorted([(format_ip(flow.client), flow.client_port),
                                     (format_ip(flow.server), flow.server_port)]))
                if ends not in theirs:
                    unknown_to_tshark.append(f"{path.name} {ends}")
                    continue
                compared += 1
                if (meta["ja3"], meta.get("sni") or "") not in theirs[ends]:
                    wrong.append(f"{path.name} {ends}: ours {meta['ja3']} {meta.get('sni')!r}, "
                                 f"tshark {theirs[ends]}")
    assert compared >= 250, (compared, unknown_to_tshark[:5])
    assert not wrong, "\n".join(wrong)
    # tshark must know nearly every hello we do (a tunnel it decodes differently may differ).
    assert len(unknown_to_tshark) <= compared // 50, unknown_to_tshark
