"""Builders for the core's tests: real frames (dpkt builds the headers, with
correct lengths and checksums) and capture files (written with ``struct``
here, byte for byte, so a test controls byte order, timestamp resolution and
damage exactly).

Addresses are given as text ("10.0.0.1", "2001:db8::1") and ports as ints.
"""

from __future__ import annotations

import gzip
import ipaddress
import struct
from typing import Iterable, Sequence

import dpkt

from dpicore.decode import Decoder
from dpicore.decode.packets import DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_NULL, DLT_RAW
from dpicore.model import ACK, FIN, PSH, RST, SYN, Packet

__all__ = [
    "ACK", "FIN", "PSH", "RST", "SYN", "eth", "ip4", "ip6", "tcp", "udp", "tcp4", "udp4", "packet",
    "pcap_bytes", "pcapng_bytes", "write_pcap", "gzip_bytes", "sll", "sll2", "tcp_session", "every_link_type",
]

ETH_SRC = b"\x02\x00\x00\x00\x00\x01"
ETH_DST = b"\x02\x00\x00\x00\x00\x02"


def addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


# -- transport and IP ----------------------------------------------------------
def tcp(sport: int, dport: int, flags: int = ACK, seq: int = 1, ack: int = 0, payload: bytes = b"",
        opts: bytes = b"") -> dpkt.tcp.TCP:
    seg = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, opts=opts, data=payload)
    seg.off = (20 + len(opts)) // 4
    return seg


def udp(sport: int, dport: int, payload: bytes = b"") -> dpkt.udp.UDP:
    seg = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    seg.ulen = len(seg)
    return seg


def ip4(src: str, dst: str, l4: dpkt.Packet | bytes, p: int, opts: bytes = b"", ident: int = 1,
        frag: int = 0) -> bytes:
    """An IPv4 packet; ``frag`` is the raw flags+offset field (0x2000 = more fragments)."""
    ip = dpkt.ip.IP(src=addr(src), dst=addr(dst), p=p, ttl=64, id=ident, _flags_offset=frag, opts=opts,
                    data=l4)
    ip.hl = (20 + len(opts)) // 4
    ip.len = 20 + len(opts) + len(bytes(l4))
    return bytes(ip)


def ip6(src: str, dst: str, l4: dpkt.Packet | bytes, nxt: int, ext: bytes = b"") -> bytes:
    """An IPv6 packet; ``ext`` is a pre-built chain of extension headers (``nxt`` is the first one's type)."""
    body = ext + bytes(l4)
    head = struct.pack("!IHBB", 0x60000000, len(body), nxt, 64) + addr(src) + addr(dst)
    return head + body


def ext_header(nxt: int, body: bytes = b"\x00" * 6) -> bytes:
    """A generic IPv6 extension header (hop-by-hop, routing, destination options): 8-byte units."""
    assert (len(body) + 2) % 8 == 0
    return bytes([nxt, (len(body) + 2) // 8 - 1]) + body


def tcp4(src: str = "10.0.0.1", sport: int = 40000, dst: str = "10.0.0.2", dport: int = 80, flags: int = ACK,
         payload: bytes = b"", seq: int = 1, ack: int = 0) -> bytes:
    """Raw IPv4+TCP bytes."""
    return ip4(src, dst, tcp(sport, dport, flags, seq, ack, payload), dpkt.ip.IP_PROTO_TCP)


def udp4(src: str = "10.0.0.1", sport: int = 40000, dst: str = "10.0.0.2", dport: int = 53,
         payload: bytes = b"") -> bytes:
    return ip4(src, dst, udp(sport, dport, payload), dpkt.ip.IP_PROTO_UDP)


# -- link layers -----------------------------------------------------------------
def eth(payload: bytes, etype: int = 0x0800, tags: Sequence[tuple[int, int]] = (), pad_to: int = 0) -> bytes:
    """Ethernet II; ``tags`` are (TPID, VLAN id) pairs, outermost first; ``pad_to`` pads like a NIC does."""
    head = ETH_DST + ETH_SRC
    for tpid, vid in tags:
        head += struct.pack("!HH", tpid, vid)
    frame = head + struct.pack("!H", etype) + payload
    return frame + b"\x00" * max(0, pad_to - len(frame))


def sll(payload: bytes, etype: int = 0x0800) -> bytes:
    """Linux cooked v1: packet type, ARPHRD, address length, 8-byte address, protocol."""
    return struct.pack("!HHH8sH", 0, 1, 6, ETH_SRC + b"\x00\x00", etype) + payload


def sll2(payload: bytes, etype: int = 0x0800, ifindex: int = 2) -> bytes:
    """Linux cooked v2 (``tcpdump -i any`` since libpcap 1.10): protocol first, then interface index."""
    return struct.pack("!HHIHBB8s", etype, 0, ifindex, 1, 0, 6, ETH_SRC + b"\x00\x00") + payload


def every_link_type() -> dict[int, list[bytes]]:
    """Frames of each link type the batch decoder reads, by link type: TCP and UDP over IPv4 (options,
    high sequence numbers) and IPv6, VLAN tags up to three deep, Ethernet padding, both loopback byte
    orders and every IPv6 family number, frames cut short; and IPv6 that only the scalar decoder reads
    (extension headers, fragments, a zero payload length)."""
    v6 = ("2001:db8::1", "2001:db8:ffff::2")
    body = [tcp4(flags=PSH | ACK, payload=b"GET / HTTP/1.1\r\n\r\n", seq=0xFFFFFFF0),
            tcp4(flags=FIN | ACK, seq=7), udp4(payload=b"\x00" * 40), udp4(payload=b""),
            ip4("10.0.0.1", "10.0.0.2", tcp(1, 2, ACK, 5, 0, b"data", opts=b"\x01" * 12), 6, opts=b"\x01" * 8),
            ip6(*v6, tcp(40000, 443, PSH | ACK, 0xFFFFFFFF, 1, b"\x16\x03\x01"), 6),
            ip6(v6[1], v6[0], tcp(443, 40000, FIN | ACK, 9, 0, b"", opts=b"\x01" * 4), 6),
            ip6("::1", "::1", udp(5353, 5353, b"\x00" * 12), 17), ip6(*v6, udp(1, 2, b""), 17),
            ip6(*v6, tcp(1, 2, ACK, 5, 0, b"hop"), 0, ext=ext_header(6)),  # hop-by-hop first: scalar
            ip6(*v6, udp(1, 2, b"frag"), 44, ext=bytes([17, 0, 0, 1]) + b"\x00\x00\x00\x07"),  # fragment
            ip6(*v6, udp(1, 2, b"x"), 17)[:4] + b"\x00\x00" + ip6(*v6, udp(1, 2, b"x"), 17)[6:]]  # length 0
    ethertype = [0x86DD if p[0] >> 4 == 6 else 0x0800 for p in body]
    return {
        1: [eth(p, et, tags=tags, pad_to=pad) for p, et in zip(body, ethertype)
            for tags in ([], [(0x8100, 7)], [(0x88A8, 5), (0x8100, 9)], [(0x9100, 1), (0x8100, 2), (0x8100, 3)])
            for pad in (0, 80)],
        DLT_LINUX_SLL: [sll(p, et) for p, et in zip(body, ethertype)],
        DLT_LINUX_SLL2: [sll2(p, et) for p, et in zip(body, ethertype)],
        DLT_RAW: body + [p[:30] for p in body] + [p[:50] for p in body] + [p[:-2] for p in body],  # cut
        DLT_NULL: [struct.pack(o, fam) + p for p in body for o in ("<I", ">I") for fam in (2, 0x0102, 10, 24, 28, 30)],
    }


# -- capture files -----------------------------------------------------------------
Record = tuple  # (ts, data) or (ts, data, wire_len)


def pcap_bytes(records: Iterable[Record], linktype: int = 1, nano: bool = False, big: bool = False,
               snaplen: int = 65535) -> bytes:
    """A classic pcap file: either byte order, µs or ns timestamps."""
    o = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(o + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    unit = 10**9 if nano else 10**6
    for rec in records:
        ts, data = rec[0], rec[1]
        wire = rec[2] if len(rec) > 2 else len(data)
        sec = int(ts)
        frac = round((ts - sec) * unit)
        out.append(struct.pack(o + "IIII", sec, frac, len(data), wire) + data)
    return b"".join(out)


def _opt(o: str, code: int, value: bytes) -> bytes:
    return struct.pack(o + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def _block(o: str, btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack(o + "II", btype, length) + body + struct.pack(o + "I", length)


def pcapng_bytes(sections: Sequence[tuple[Sequence[tuple[int, int | None]], Sequence[tuple[int, float, bytes]]]],
                 big: bool = False) -> bytes:
    """A pcapng file.

    ``sections``: a list of (interfaces, packets); interfaces are (linktype,
    if_tsresol byte or None for the default µs), packets are (interface index
    within the section, ts, data).
    """
    o = ">" if big else "<"
    out = []
    for interfaces, packets in sections:
        shb = struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1)
        out.append(struct.pack(o + "II", 0x0A0D0D0A, 12 + len(shb)) + shb + struct.pack(o + "I", 12 + len(shb)))
        ticks_per_s = []
        for linktype, tsresol in interfaces:
            opts = b""
            if tsresol is not None:
                opts = _opt(o, 9, bytes([tsresol])) + _opt(o, 0, b"")
            out.append(_block(o, 1, struct.pack(o + "HHI", linktype, 0, 262144) + opts))
            if tsresol is None:
                ticks_per_s.append(10**6)
            elif tsresol & 0x80:
                ticks_per_s.append(2 ** (tsresol & 0x7F))
            else:
                ticks_per_s.append(10 ** tsresol)
        for iface, ts, data in packets:
            ticks = round(ts * (ticks_per_s[iface] if iface < len(ticks_per_s) else 10**6))
            body = struct.pack(o + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
            out.append(_block(o, 6, body + data + b"\x00" * (-len(data) % 4)))
    return b"".join(out)


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data)


def write_pcap(path, frames: Iterable[bytes], linktype: int = 1, start: float = 1_600_000_000.0,
               step: float = 0.01) -> None:
    """Write frames (one per ``step`` seconds) as a µs pcap file."""
    path.write_bytes(pcap_bytes([(start + i * step, f) for i, f in enumerate(frames)], linktype))


# -- packets for the flow table and the engine ----------------------------------------
_decoder = Decoder()


def packet(ts: float, src: str = "10.0.0.1", sport: int = 40000, dst: str = "10.0.0.2", dport: int = 80,
           flags: int = ACK, payload: bytes = b"", seq: int = 1, proto: str = "tcp", number: int = 0) -> Packet:
    """A Packet decoded from a real raw-IPv4 frame (TCP or UDP)."""
    frame = tcp4(src, sport, dst, dport, flags, payload, seq) if proto == "tcp" else udp4(src, sport, dst, dport,
                                                                                          payload)
    pkt = _decoder.decode(DLT_RAW, frame, ts, len(frame), number)
    assert pkt is not None
    return pkt


def tcp_session(t0: float = 100.0, client: tuple[str, int] = ("10.0.0.1", 40000),
                server: tuple[str, int] = ("10.0.0.2", 80), request: bytes = b"GET / HTTP/1.1\r\n\r\n",
                response: bytes = b"HTTP/1.1 200 OK\r\n\r\n", close: str = "fin") -> list[Packet]:
    """A complete TCP connection: handshake, one request and response, then FIN/FIN (+ last ACK) or RST."""
    (c, cp), (s, sp) = client, server
    cs, ss = 1000, 9000
    pk = []

    def add(frm_client: bool, flags: int, payload: bytes = b"", seq: int = 0) -> None:
        src, sport, dst, dport = (c, cp, s, sp) if frm_client else (s, sp, c, cp)
        pk.append(packet(t0 + 0.01 * len(pk), src, sport, dst, dport, flags, payload, seq))

    add(True, SYN, seq=cs)
    add(False, SYN | ACK, seq=ss)
    add(True, ACK, seq=cs + 1)
    add(True, PSH | ACK, request, cs + 1)
    add(False, PSH | ACK, response, ss + 1)
    cs += 1 + len(request)
    ss += 1 + len(response)
    if close == "fin":
        add(True, FIN | ACK, seq=cs)
        add(False, FIN | ACK, seq=ss)
        add(True, ACK, seq=cs + 1)  # the trailing ACK stays on the flow
    else:
        add(True, RST | ACK, seq=cs)
    return pk
