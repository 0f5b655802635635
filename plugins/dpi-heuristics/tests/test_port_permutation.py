"""Rewriting every TCP and UDP port of a capture changes none of the heuristics' labels.

Each port p becomes ``(p * 40503 + 7919) % 65536`` (40503 is odd, so this is
a permutation of all 65536 ports): 443 becomes 46500, 53 becomes 57942, and
no well-known port keeps its meaning.  dpkt parses every frame and writes the
rewritten capture to tmp_path; the flows of both captures are paired through
the same permutation and must get the same protocol from the heuristics layer.

The FTP capture is left out on purpose: its control connection announces
the data connection's port in text (PASV/EPSV), which a header rewrite
does not touch, so the data flow could only be missed by design.
"""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import pytest
from dpicore import Classifier
from dpicore.decode import CaptureSource
from dpicore.decode.capture import CaptureReader
from dpicore.model import format_ip, transport_name

#: Captures with the protocols of all three batches, small enough to run twice in a few seconds.
CAPTURES = [
    "tls_long_cert.pcap", "tls_2_reasms.pcapng", "tls_1.3_unidirectional_server.pcapng", "quic-mvfst-22.pcap",
    "youtube_quic.pcap", "dtls.pcap", "ssh.pcap", "openvpn.pcap", "wireguard.pcap", "ipsec_isakmp_esp.pcap",
    "bittorrent.pcap", "bt_search.pcap", "socks.pcap", "stun_wa_call.pcapng", "rtp.pcapng",
    "rtcp_multiple_pkts_in_the_same_datagram.pcap", "websocket.pcap", "sip.pcap", "smtp-starttls.pcap",
    "mysql.pcapng", "pgsql2.pcapng", "resp.pcap", "mongodb.pcap", "memcached.cap", "mqtt.pcap", "irc.pcap",
    "jabber.pcap", "rtsp.pcap", "git.pcap", "vnc.pcap", "telnet.pcap", "amqp.pcap", "modbus.pcap",
    "kerberos-login.pcap", "snmp.pcap", "syslog.pcap", "tftp.pcap", "nfsv3.pcap", "rdp.pcap", "mssql_tds.pcap",
    "BGP_redist.pcap", "NTPv3.pcap", "iphone.pcap", "teredo.pcap",
]


def permute(port: int) -> int:
    return (port * 40503 + 7919) % 65536


def unpermute(port: int) -> int:
    return ((port - 7919) * pow(40503, -1, 65536)) % 65536


def _patched(frame: bytes, outer: dpkt.Packet) -> bytes | None:
    """``frame`` with the ports of its (innermost) TCP/UDP header permuted in place, or None.

    dpkt finds the header; the bytes are patched where they are instead of
    re-serialising the frame, because dpkt's writers normalise some link
    layers (PPP protocol-field compression on PPPoE) and would change more
    than the ports.
    """
    ip = outer
    while ip is not None and not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
        ip = getattr(ip, "data", None)
    while ip is not None and isinstance(ip.data, (dpkt.ip.IP, dpkt.ip6.IP6)):
        ip = ip.data
    l4 = getattr(ip, "data", None)
    if not isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
        return None
    at = frame.find(ip.src + ip.dst)
    if at < 0:
        return None
    at = frame.find(struct.pack("!HH", l4.sport, l4.dport), at + len(ip.src) * 2)
    if at < 0:
        return None
    return frame[:at] + struct.pack("!HH", permute(l4.sport), permute(l4.dport)) + frame[at + 4:]


def _network(frame: bytes, linktype: int) -> tuple[bytes, dpkt.Packet] | None:
    """(bytes kept as they are, the parsed rest) of a frame, for the link types of :data:`CAPTURES`."""
    if linktype == dpkt.pcap.DLT_EN10MB:
        return b"", dpkt.ethernet.Ethernet(frame)
    if linktype in (dpkt.pcap.DLT_RAW, 101, 12, 14, 228, 229):
        return b"", dpkt.ip6.IP6(frame) if frame[:1] and frame[0] >> 4 == 6 else dpkt.ip.IP(frame)
    if linktype == dpkt.pcap.DLT_LINUX_SLL:
        return b"", dpkt.sll.SLL(frame)
    if linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
        return b"", dpkt.loopback.Loopback(frame)
    if linktype == 104:  # Cisco HDLC: a 4-byte header, then IP, or MPLS labels and then IP
        off = 4
        if frame[2:4] == b"\x88\x47":
            while off + 4 <= len(frame) and not frame[off + 2] & 0x01:
                off += 4
            off += 4
        if frame[off:off + 1] and frame[off] >> 4 == 4:
            return frame[:off], dpkt.ip.IP(frame[off:])
        if frame[off:off + 1] and frame[off] >> 4 == 6:
            return frame[:off], dpkt.ip6.IP6(frame[off:])
    return None


def rewrite(src: Path, dst: Path) -> int:
    """Write ``src`` with every TCP/UDP port permuted; returns the number of rewritten packets.

    Frames are read with dpicore's reader (dpkt's pcapng reader misreads the
    timestamps of some multi-interface files) and parsed, changed and written
    with dpkt; a capture with several link types would need one file each,
    which none of :data:`CAPTURES` has.
    """
    changed = 0
    with CaptureReader(src) as reader, dst.open("wb") as out:
        writer = None
        for frame in reader:
            if writer is None:
                writer = dpkt.pcap.Writer(out, snaplen=262144, linktype=frame.linktype)
                linktype = frame.linktype
            assert frame.linktype == linktype, f"{src.name}: several link types"
            data = frame.data
            try:
                parsed = _network(data, linktype)
                patched = _patched(data, parsed[1]) if parsed is not None else None
                if patched is not None:
                    data = patched
                    changed += 1
            except (dpkt.UnpackError, struct.error, ValueError):
                pass  # a frame dpkt cannot parse stays as it was
            writer.writepkt(data, frame.ts)
    return changed


def check_rewrite(src: Path, dst: Path) -> None:
    """Packet by packet, as dpicore decodes them: same packets, every TCP/UDP port permuted."""
    before, after = list(CaptureSource(src)), list(CaptureSource(dst))
    assert len(before) == len(after), src.name
    for a, b in zip(before, after):
        if a.proto in (6, 17) and not a.fragment:
            assert (b.sport, b.dport) == (permute(a.sport), permute(a.dport)), f"{src.name} #{a.number}"
        assert (a.proto, a.src, a.dst, bytes(a.payload)) == (b.proto, b.src, b.dst, bytes(b.payload))


def labels(clf: Classifier, path: Path, mapped: bool) -> dict[tuple, str]:
    """Heuristics-layer protocol per flow, keyed by transport and endpoints (ports permuted back if mapped)."""
    out: dict[tuple, str] = {}
    for flow in clf.classify_pcap(path):
        ends = sorted([(format_ip(flow.client), flow.client_port), (format_ip(flow.server), flow.server_port)])
        if mapped and flow.proto in (6, 17):
            ends = sorted((a, unpermute(p)) for a, p in ends)
        key = (transport_name(flow.proto), flow.vlan, *ends, round(flow.first_seen, 3))
        out[key] = flow.verdict.protocol if flow.verdict else "Unknown"
    return out


def test_the_permutation_is_one() -> None:
    assert len({permute(p) for p in range(65536)}) == 65536
    assert all(unpermute(permute(p)) == p for p in range(0, 65536, 7))
    assert permute(443) not in (443, 80, 8443) and permute(53) != 53


@pytest.mark.corpus
def test_labels_survive_port_permutation(corpus: Path, tmp_path: Path) -> None:
    differences, rewritten, named = [], 0, 0
    with Classifier(layers=["heuristics"]) as clf:
        for name in CAPTURES:
            src = corpus / "pcap" / name
            dst = tmp_path / (name + ".permuted.pcap")
            rewritten += rewrite(src, dst)
            check_rewrite(src, dst)
            before, after = labels(clf, src, mapped=False), labels(clf, dst, mapped=True)
            assert before.keys() == after.keys(), name
            named += sum(p != "Unknown" for p in before.values())
            differences += [f"{name}: {k[0]} {k[2]} {k[3]}: {before[k]} -> {after[k]}"
                            for k in before if before[k] != after[k]]
    assert rewritten > 5000 and named > 200, (rewritten, named)
    assert not differences, "\n".join(differences)
