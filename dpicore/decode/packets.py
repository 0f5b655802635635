"""Frame → :class:`~dpicore.model.Packet`, reading header fields by offset.

Building a dpkt object tree per packet costs about 7x more than reading the
few fields a flow table needs straight from the bytes, so the common path
(link layer, VLAN tags, IPv4/IPv6, TCP/UDP/SCTP) is decoded here with
``struct`` and slicing.  Errors are typed like dpkt's: :class:`Truncated`
when a header is cut short, :class:`Malformed` when a field is impossible.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

from ..model import ICMP, ICMPV6, SCTP, TCP, UDP, Packet

# Link types (LINKTYPE_* values as written in capture files).
DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW_OLD = 12
DLT_RAW_OPENBSD = 14
DLT_RAW = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_IPV4 = 228
DLT_IPV6 = 229
DLT_LINUX_SLL2 = 276
DLT_C_HDLC = 104

LINKTYPE_NAMES = {
    DLT_NULL: "BSD loopback", DLT_EN10MB: "Ethernet", DLT_RAW_OLD: "raw IP", DLT_RAW_OPENBSD: "raw IP",
    DLT_RAW: "raw IP", DLT_LOOP: "OpenBSD loopback", DLT_LINUX_SLL: "Linux cooked (SLL)",
    DLT_IPV4: "raw IPv4", DLT_IPV6: "raw IPv6", DLT_LINUX_SLL2: "Linux cooked v2 (SLL2)",
    DLT_C_HDLC: "Cisco HDLC",
}
SUPPORTED_LINKTYPES = frozenset(LINKTYPE_NAMES)

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
ETH_MPLS = frozenset({0x8847, 0x8848})
ETH_PPPOE_SESSION = 0x8864

# IPv6 extension headers that are skipped to find the transport (AH and ESP
# are kept as transports of their own, as nDPI does).
IPV6_EXT = frozenset({0, 43, 60, 135, 139, 140, 253, 254})
IPV6_FRAGMENT = 44
IPPROTO_IPV6 = 41
IPPROTO_IPIP = 4

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_TCP = struct.Struct("!HHIIBB")


class DecodeError(Exception):
    """A frame could not be decoded."""


class Truncated(DecodeError):
    """A header is cut short."""


class Malformed(DecodeError):
    """A header holds an impossible value."""


class UnsupportedLinkType(DecodeError):
    def __init__(self, linktype: int) -> None:
        self.linktype = linktype
        super().__init__(f"unsupported link type {linktype} (supported: "
                         + ", ".join(f"{k} {v}" for k, v in sorted(LINKTYPE_NAMES.items())) + ")")


#: IP headers one frame may stack (IP-in-IP, 6in4, IPv6-in-IPv6) before the decoder gives up on it:
#: real tunnels nest two or three deep; a frame of a thousand is hostile, not a tunnel.
MAX_TUNNELS = 8


def _check_depth(depth: int) -> None:
    if depth >= MAX_TUNNELS:
        raise Malformed(f"more than {MAX_TUNNELS} nested IP headers (IP-in-IP / IPv6-in-IPv6)")


class Decoder:
    """Stateful only for IPv4/IPv6 fragments: non-first fragments carry no
    ports, so the ports of each datagram's first fragment are remembered
    (bounded) and its later fragments are counted on the same flow.
    """

    MAX_FRAGMENT_IDS = 4096

    def __init__(self) -> None:
        self._fragments: OrderedDict[tuple[bytes, bytes, int, int], tuple[int, int]] = OrderedDict()
        self.non_ip = 0

    # -- link layer ------------------------------------------------------------
    def decode(self, linktype: int, data: bytes, ts: float, wire_len: int, number: int = 0) -> Packet | None:
        """Decode one frame; None for frames that carry no IP (ARP, STP, …)."""
        if linktype == DLT_EN10MB:
            if len(data) < 14:
                raise Truncated(f"Ethernet header needs 14 bytes, frame has {len(data)}")
            etype = (data[12] << 8) | data[13]
            off = 14
        elif linktype == DLT_LINUX_SLL:
            if len(data) < 16:
                raise Truncated("Linux cooked header needs 16 bytes")
            etype = (data[14] << 8) | data[15]
            off = 16
        elif linktype == DLT_LINUX_SLL2:
            if len(data) < 20:
                raise Truncated("Linux cooked v2 header needs 20 bytes")
            etype = (data[0] << 8) | data[1]
            off = 20
        elif linktype in (DLT_RAW, DLT_RAW_OLD, DLT_RAW_OPENBSD, DLT_IPV4, DLT_IPV6):
            off = 0
            etype = self._ethertype_from_version(data, 0)
        elif linktype == DLT_C_HDLC:
            if len(data) < 4:
                raise Truncated("Cisco HDLC header needs 4 bytes")
            etype = (data[2] << 8) | data[3]
            off = 4
        elif linktype in (DLT_NULL, DLT_LOOP):
            if len(data) < 4:
                raise Truncated("loopback header needs 4 bytes")
            # DLT_NULL holds the family in the byte order of the host that wrote the capture
            # (DLT_LOOP: always network order); families are small, so the smaller reading is right.
            family = min(struct.unpack_from("<I", data)[0], struct.unpack_from(">I", data)[0])
            off = 4
            etype = ETH_IPV4 if family == 2 else ETH_IPV6 if family in (10, 24, 28, 30) else 0
        else:
            raise UnsupportedLinkType(linktype)

        vlan = 0
        if etype != ETH_IPV4 and etype != ETH_IPV6:
            etype, off, vlan = self._encapsulation(data, etype, off)
        if etype == ETH_IPV4:
            return self._ipv4(data, off, ts, wire_len, vlan, number)
        if etype == ETH_IPV6:
            return self._ipv6(data, off, ts, wire_len, vlan, number)
        self.non_ip += 1
        return None

    def _encapsulation(self, data: bytes, etype: int, off: int) -> tuple[int, int, int]:
        """Unwrap 802.1Q/QinQ tags, MPLS labels and PPPoE down to the IP ethertype.

        The VLAN is the innermost tag, as ndpiReader reports it.
        """
        vlan = 0
        while True:
            if etype in ETH_VLAN:
                if len(data) < off + 4:
                    raise Truncated("802.1Q tag cut short")
                vlan = ((data[off] << 8) | data[off + 1]) & 0x0FFF
                etype = (data[off + 2] << 8) | data[off + 3]
                off += 4
            elif etype == ETH_PPPOE_SESSION:
                if len(data) < off + 8:
                    raise Truncated("PPPoE header cut short")
                ppp = (data[off + 6] << 8) | data[off + 7]
                off += 8
                etype = ETH_IPV4 if ppp == 0x0021 else ETH_IPV6 if ppp == 0x0057 else 0
            elif etype in ETH_MPLS:
                while True:
                    if len(data) < off + 4:
                        raise Truncated("MPLS label cut short")
                    bottom = data[off + 2] & 0x01
                    off += 4
                    if bottom:
                        break
                etype = self._ethertype_from_version(data, off)
            else:
                return etype, off, vlan

    @staticmethod
    def _ethertype_from_version(data: bytes, off: int) -> int:
        if len(data) <= off:
            raise Truncated("no IP header")
        v = data[off] >> 4
        if v == 4:
            return ETH_IPV4
        if v == 6:
            return ETH_IPV6
        raise Malformed(f"IP version {v}")

    # -- network layer ---------------------------------------------------------
    def _ipv4(self, data: bytes, off: int, ts: float, wire_len: int, vlan: int, number: int,
              depth: int = 0) -> Packet | None:
        avail = len(data) - off
        if avail < 20:
            raise Truncated(f"IPv4 header needs 20 bytes, {avail} captured")
        vihl = data[off]
        if vihl >> 4 != 4:
            raise Malformed(f"IP version {vihl >> 4} in an IPv4 frame")
        ihl = (vihl & 0x0F) * 4
        total = (data[off + 2] << 8) | data[off + 3]
        if ihl < 20 or total < ihl:
            raise Malformed(f"IPv4 header length {ihl}, total length {total}")
        if avail < ihl:
            raise Truncated("IPv4 options cut short")
        frag = (data[off + 6] << 8) | data[off + 7]
        proto = data[off + 9]
        src = data[off + 12:off + 16]
        dst = data[off + 16:off + 20]
        end = off + min(total, avail)  # drop Ethernet padding, tolerate snap length
        ip = data[off:end]
        if proto == IPPROTO_IPV6 or proto == IPPROTO_IPIP:  # 6in4 / IP-in-IP: classify the inner packet
            inner = off + ihl
            if end - inner >= 20 and data[inner] >> 4 == (6 if proto == IPPROTO_IPV6 else 4) and not frag & 0x3FFF:
                _check_depth(depth)
                if proto == IPPROTO_IPV6:
                    return self._ipv6(data[:end], inner, ts, wire_len, vlan, number, depth + 1)
                return self._ipv4(data[:end], inner, ts, wire_len, vlan, number, depth + 1)
        offset = (frag & 0x1FFF) * 8
        more = frag & 0x2000
        l4 = off + ihl
        payload_wire = total - ihl
        if offset or more:
            fkey = (src, dst, (data[off + 4] << 8) | data[off + 5], proto)
            return self._fragment(fkey, offset, more, data, l4, end, payload_wire, ts, 4, src, dst, proto,
                                  wire_len, ip, vlan, number)
        return self._transport(data, l4, end, payload_wire, ts, 4, src, dst, proto, wire_len, ip, vlan, number)

    def _ipv6(self, data: bytes, off: int, ts: float, wire_len: int, vlan: int, number: int,
              depth: int = 0) -> Packet | None:
        avail = len(data) - off
        if avail < 40:
            raise Truncated(f"IPv6 header needs 40 bytes, {avail} captured")
        if data[off] >> 4 != 6:
            raise Malformed(f"IP version {data[off] >> 4} in an IPv6 frame")
        plen = (data[off + 4] << 8) | data[off + 5]
        nxt = data[off + 6]
        src = data[off + 8:off + 24]
        dst = data[off + 24:off + 40]
        end = off + 40 + plen if plen else len(data)  # plen 0: jumbogram
        end = min(end, len(data))
        ip = data[off:end]
        pos = off + 40
        while nxt in IPV6_EXT or nxt == IPV6_FRAGMENT:
            if end - pos < 8:
                raise Truncated("IPv6 extension header cut short")
            if nxt == IPV6_FRAGMENT:
                fo = (data[pos + 2] << 8) | data[pos + 3]
                ident = struct.unpack_from("!I", data, pos + 4)[0]
                inner = data[pos]
                pos += 8
                offset, more = fo & 0xFFF8, fo & 0x1
                if offset or more:
                    return self._fragment((src, dst, ident, inner), offset, more, data, pos, end,
                                          off + 40 + plen - pos, ts, 6, src, dst, inner, wire_len, ip, vlan,
                                          number)
                nxt = inner
                continue
            hlen = (data[pos + 1] + 1) * 8
            nxt = data[pos]
            pos += hlen
        if nxt == 59:  # no next header
            return Packet(ts, 6, src, dst, nxt, wire_len=wire_len, ip=ip, vlan=vlan, number=number)
        if nxt == IPPROTO_IPIP or nxt == IPPROTO_IPV6:
            if end - pos >= 20 and data[pos] >> 4 in (4, 6):
                _check_depth(depth)
                sub = data[:end]
                return self._ipv4(sub, pos, ts, wire_len, vlan, number, depth + 1) if data[pos] >> 4 == 4 else \
                    self._ipv6(sub, pos, ts, wire_len, vlan, number, depth + 1)
        return self._transport(data, pos, end, max(0, off + 40 + plen - pos), ts, 6, src, dst, nxt, wire_len,
                               ip, vlan, number)

    def _fragment(self, fkey: tuple[bytes, bytes, int, int], offset: int, more: int, data: bytes, l4: int,
                  end: int, payload_wire: int, ts: float, version: int, src: bytes, dst: bytes, proto: int,
                  wire_len: int, ip: bytes, vlan: int, number: int) -> Packet | None:
        if offset == 0:
            pkt = self._transport(data, l4, end, payload_wire, ts, version, src, dst, proto, wire_len, ip, vlan,
                                  number)
            if pkt is not None:
                frags = self._fragments
                frags[fkey] = (pkt.sport, pkt.dport)
                if len(frags) > self.MAX_FRAGMENT_IDS:
                    frags.popitem(last=False)
            return pkt
        ports = self._fragments.get(fkey)
        if ports is None:  # first fragment unseen (lost or reordered): count it on a port-less flow
            ports = (0, 0)
        elif not more:
            del self._fragments[fkey]
        return Packet(ts, version, src, dst, proto, ports[0], ports[1], 0, wire_len, b"", payload_wire, ip, vlan,
                      0, number, True)

    # -- transport -------------------------------------------------------------
    @staticmethod
    def _transport(data: bytes, l4: int, end: int, payload_wire: int, ts: float, version: int, src: bytes,
                   dst: bytes, proto: int, wire_len: int, ip: bytes, vlan: int, number: int) -> Packet | None:
        avail = end - l4
        if proto == TCP:
            if avail < 20:
                raise Truncated(f"TCP header needs 20 bytes, {max(avail, 0)} captured")
            sport, dport, seq, _ack, doff, flags = _TCP.unpack_from(data, l4)
            hlen = (doff >> 4) * 4
            if hlen < 20:
                raise Malformed(f"TCP data offset {hlen}")
            start = l4 + hlen
            if start > end:
                raise Truncated("TCP options cut short")
            return Packet(ts, version, src, dst, TCP, sport, dport, flags, wire_len, data[start:end],
                          max(0, payload_wire - hlen), ip, vlan, seq, number)
        if proto == UDP:
            if avail < 8:
                raise Truncated(f"UDP header needs 8 bytes, {max(avail, 0)} captured")
            sport, dport = _HH.unpack_from(data, l4)
            return Packet(ts, version, src, dst, UDP, sport, dport, 0, wire_len, data[l4 + 8:end],
                          max(0, payload_wire - 8), ip, vlan, 0, number)
        if proto == SCTP:
            if avail < 12:
                raise Truncated("SCTP header cut short")
            sport, dport = _HH.unpack_from(data, l4)
            return Packet(ts, version, src, dst, SCTP, sport, dport, 0, wire_len, data[l4 + 12:end],
                          max(0, payload_wire - 12), ip, vlan, 0, number)
        if proto == ICMP or proto == ICMPV6:
            # Payload is the ICMP message itself, so a layer can read type and code.
            return Packet(ts, version, src, dst, proto, 0, 0, 0, wire_len, data[l4:end], max(0, payload_wire),
                          ip, vlan, 0, number)
        return Packet(ts, version, src, dst, proto, 0, 0, 0, wire_len, data[l4:end], max(0, payload_wire), ip,
                      vlan, 0, number)
