"""lpi_data_t as the C side receives it, on real captures, against an independent dpkt computation.

The dpicore pipeline (capture reader, decoder, flow table, engine) runs the
lpi layer over every capture of the nDPI corpus with the C test double as
its library; the double reports each flow's ``lpi_data_t`` field by field.
The same fields are computed here a second way, from dpkt's parse of the
same files and the filling rules of libprotoident 2.0.15, and must agree
for every flow both sides see the same way (one flow per 5-tuple, no IP
fragments, no IPv6 extension headers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dpkt
import pytest

from dpicore.corpus import captures

pytestmark = pytest.mark.corpus

CAP = 32 * 1024
SYN, RST, ACK = 0x02, 0x04, 0x10


@dataclass
class RefFlow:
    """The reference record of one 5-tuple, built from dpkt objects."""

    client: tuple[bytes, int]
    packets: list[tuple[int, int, int, int, bytes, int, bytes, bytes, int, int, int]] = field(default_factory=list)
    unsure: bool = False


def _ip_layer(linktype: int, buf: bytes):
    if linktype == dpkt.pcap.DLT_EN10MB:
        obj = dpkt.ethernet.Ethernet(buf).data
        while isinstance(obj, (dpkt.pppoe.PPPoE, dpkt.ppp.PPP)):
            obj = obj.data
    elif linktype == dpkt.pcap.DLT_LINUX_SLL:
        obj = dpkt.sll.SLL(buf).data
    elif linktype == dpkt.pcap.DLT_NULL:
        obj = dpkt.loopback.Loopback(buf).data
    else:
        return None
    return obj if isinstance(obj, (dpkt.ip.IP, dpkt.ip6.IP6)) else None


def _reader(path: Path):
    fh = path.open("rb")
    try:
        return fh, dpkt.pcap.Reader(fh)
    except ValueError:
        fh.seek(0)
        return fh, dpkt.pcapng.Reader(fh)


def reference_flows(path: Path) -> dict[tuple, RefFlow] | None:
    """Per bidirectional 5-tuple, the packets as dpkt sees them; None for a capture dpkt cannot read."""
    fh, reader = _reader(path)
    flows: dict[tuple, RefFlow] = {}
    try:
        linktype = reader.datalink()
        if linktype not in (dpkt.pcap.DLT_EN10MB, dpkt.pcap.DLT_LINUX_SLL, dpkt.pcap.DLT_NULL):
            return None
        for _ts, buf in reader:
            try:
                ip = _ip_layer(linktype, buf)
            except (dpkt.UnpackError, IndexError):
                continue
            if ip is None:
                continue
            v4 = isinstance(ip, dpkt.ip.IP)
            proto = ip.p if v4 else ip.nxt
            if proto not in (6, 17):
                continue
            l4 = ip.data
            raw = bytes(l4) if not isinstance(l4, bytes) else l4
            if len(raw) < 4:
                return None  # a header too short to even name its flow: leave the capture out
            sport, dport = int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")
            key = (proto, *sorted([(ip.src, sport), (ip.dst, dport)]))
            tcp_syn_ack = isinstance(l4, dpkt.tcp.TCP) and l4.flags & (SYN | ACK) == SYN | ACK
            flow = flows.get(key)
            if flow is None:
                flow = flows[key] = RefFlow((ip.dst, dport) if tcp_syn_ack else (ip.src, sport))
            fragmented = v4 and (ip.mf or ip.offset)
            if fragmented or not v4 and ip.p != ip.nxt or not isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                flow.unsure = True
                continue
            d = 0 if (ip.src, sport) == flow.client else 1
            if isinstance(l4, dpkt.tcp.TCP):
                wire = (ip.len - ip.hl * 4 if v4 else ip.plen) - l4.off * 4
                flow.packets.append((d, 6, l4.flags, l4.seq, bytes(l4.data), max(wire, 0), ip.src, ip.dst,
                                     sport, dport, 4 if v4 else 6))
            else:
                wire = (ip.len - ip.hl * 4 if v4 else ip.plen) - 8
                flow.packets.append((d, 17, 0, 0, bytes(l4.data), max(wire, 0), ip.src, ip.dst, sport, dport,
                                     4 if v4 else 6))
    finally:
        fh.close()
    return flows


def expected_fields(flow: RefFlow) -> dict[str, str]:
    """libprotoident's filling rules over the reference packets, up to the layer's decision point."""
    observed, first, start, syn = [0, 0], [None, None], [None, None], [False, False]
    ports = ips = None
    trans = 0
    for d, proto, flags, seq, data, wire, src, dst, sport, dport, version in flow.packets:
        if observed[d] > CAP:
            continue
        observed[d] += wire
        trans = trans or proto
        if trans != 6 and first[d] is not None:
            continue
        if proto == 6:
            if flags & RST:
                continue
            ports = ports or (dport, sport)
            if flags & SYN and first[d] is None:
                start[d], syn[d] = (seq + 1) % 2**32, True
            if not syn[d] and wire > 0:
                start[d], syn[d] = seq, True
            if seq != start[d]:
                continue
        else:
            ports = ports or (dport, sport)
        if wire == 0:
            continue
        first[d] = (data[:min(4, wire)].ljust(4, b"\0"), wire)
        if ips is None and version == 4:
            ips = (src, dst) if d == 0 else (dst, src)
        if first[0] and first[1] or observed[0] > CAP and observed[1] > CAP:
            break  # the layer asks libprotoident here
    zero = b"\0\0\0\0"
    return {
        "p0": (first[0][0] if first[0] else zero).hex(), "p1": (first[1][0] if first[1] else zero).hex(),
        "len": f"{first[0][1] if first[0] else 0},{first[1][1] if first[1] else 0}",
        "obs": f"{observed[0]},{observed[1]}", "tp": str(trans),
        "sp": str(ports[0] if ports else 0), "cp": str(ports[1] if ports else 0),
        "syn": f"{int(syn[0])},{int(syn[1])}",
        "seq": f"{start[0] or 0},{start[1] or 0}" if trans == 6 else "0,0",
        "ip0": (ips[0] if ips else zero).hex(), "ip1": (ips[1] if ips else zero).hex(),
    }


def test_lpi_data_matches_dpkt_on_every_corpus_capture(corpus, fake_lpi, lpi_classifier, parse_dump) -> None:
    compared = both_ways = tcp_flows = 0
    mismatches: list[str] = []
    with lpi_classifier(fake_lpi, max_packets=10**9) as clf:
        for path, _labels in captures(corpus):
            reference = reference_flows(path)
            if reference is None:
                continue
            ours: dict[tuple, list] = {}
            for flow in clf.classify_pcap(path):
                if flow.proto in (6, 17):
                    key = (flow.proto, *sorted([(flow.client, flow.client_port), (flow.server, flow.server_port)]))
                    ours.setdefault(key, []).append(flow)
            for key, flows in ours.items():
                ref = reference.get(key)
                if len(flows) != 1 or ref is None or ref.unsure or not ref.packets:
                    continue
                flow = flows[0]
                if (flow.client, flow.client_port) != ref.client:
                    mismatches.append(f"{path.name} {key}: client {flow.client_port} vs {ref.client[1]}")
                    continue
                assert len(flow.verdicts) == 1, flow.verdicts
                got = parse_dump(flow.verdicts[0].metadata["lpi_protocol"])
                want = expected_fields(ref)
                compared += 1
                tcp_flows += flow.proto == 6
                both_ways += got["len"].split(",")[1] != "0" and got["len"].split(",")[0] != "0"
                if got != want:
                    diff = {k: (got.get(k), want[k]) for k in want if got.get(k) != want[k]}
                    mismatches.append(f"{path.name} {flow.client_port}->{flow.server_port}/{flow.proto}: {diff}")
    assert not mismatches, f"{len(mismatches)} of {compared} flows differ:\n" + "\n".join(mismatches[:20])
    # The comparison must cover real traffic, not a handful of flows.
    print(f"compared {compared} flows ({tcp_flows} TCP, {both_ways} with payload both ways)")
    assert compared >= 500 and tcp_flows >= 150 and both_ways >= 300, (compared, tcp_flows, both_ways)
