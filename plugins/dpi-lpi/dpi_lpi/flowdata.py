"""Filling ``lpi_data_t`` from dpicore packets, the way ``lpi_update_data`` does.

libprotoident's own ``lpi_update_data`` wants a libtrace packet, so the
layer keeps the same per-flow record in Python and follows the library's
rules (2.0.15), because they decide what the protocol modules see:

* ``observed[d]`` adds each packet's wire payload length in direction ``d``
  (RST segments included) and stops changing once it exceeds 32 KiB; a
  packet arriving after that is ignored entirely.
* ``server_port``/``client_port`` come from the first packet that carries a
  transport header (the destination and source ports), RST segments aside.
* TCP: the first payload of a direction is the segment starting at ISN+1
  (``seqno[d]`` is set from the SYN); a later segment that arrives first is
  skipped, so reordering cannot put the wrong bytes in ``payload[d]``.
  Without a SYN the first payload-carrying segment sets ``seqno[d]``.  RST
  segments never contribute payload.
* UDP (and other transports): the first payload-carrying datagram of a
  direction, nothing after it.
* ``payload[d]`` is the first four payload bytes as captured, zero-padded
  (and masked to the wire length when that is under four);
  ``payload_len[d]`` is the wire length from the IP header, not the
  captured length.
* ``ips`` are the IPv4 addresses of the initiator and responder, stored as
  the library stores ``s_addr`` (network byte order in memory); 0 for IPv6.

Direction 0 is the flow's initiator, as dpicore's flow table decides it.
"""

from __future__ import annotations

import sys

from dpicore.model import RST, SYN, TCP, UDP, Packet

from .binding import LpiData

#: ``observed[d]`` stops growing (and the direction stops updating) past this.
OBSERVED_CAP = 32 * 1024
_MASK32 = 0xFFFFFFFF
_NATIVE = sys.byteorder


def raw_u32(data: bytes) -> int:
    """Four bytes as the native uint32 a plain C load of them gives (memory order kept)."""
    return int.from_bytes(data[:4].ljust(4, b"\0"), _NATIVE)


class LpiFlowData:
    """The Python twin of one flow's ``lpi_data_t``, updated packet by packet."""

    __slots__ = ("payload", "seen_syn", "seqno", "observed", "server_port", "client_port", "trans_proto",
                 "payload_len", "ips")

    def __init__(self) -> None:
        self.payload = [0, 0]
        self.seen_syn = [False, False]
        self.seqno = [0, 0]
        self.observed = [0, 0]
        self.server_port = 0
        self.client_port = 0
        self.trans_proto = 0
        self.payload_len = [0, 0]
        self.ips = [0, 0]

    def update(self, pkt: Packet, d: int) -> None:
        """Account one packet of direction ``d`` (0 initiator, 1 responder)."""
        observed = self.observed
        if observed[d] > OBSERVED_CAP:
            return
        # A non-first IPv4 fragment has no transport header: libtrace reports no payload for it.
        psize = 0 if pkt.fragment else pkt.payload_len
        observed[d] = (observed[d] + psize) & _MASK32
        if self.trans_proto != TCP and self.payload_len[d]:
            return
        if pkt.fragment:
            return
        proto = pkt.proto
        if self.trans_proto == 0:
            self.trans_proto = proto
        if proto == TCP:
            flags = pkt.tcp_flags
            if flags & RST:
                return
            if self.server_port == 0:
                self.server_port, self.client_port = pkt.dport, pkt.sport
            seq = pkt.seq
            if flags & SYN and not self.payload_len[d]:
                self.seqno[d] = (seq + 1) & _MASK32
                self.seen_syn[d] = True
            if not self.seen_syn[d] and psize > 0:
                self.seqno[d] = seq
                self.seen_syn[d] = True
            if seq != self.seqno[d]:
                return
        elif proto == UDP:
            if self.server_port == 0:
                self.server_port, self.client_port = pkt.dport, pkt.sport
        else:
            return
        if psize <= 0:
            return
        head = bytes(pkt.payload[:min(4, psize)])
        self.payload[d] = raw_u32(head)
        self.payload_len[d] = psize
        if pkt.ip_version == 4 and self.ips[0] == 0:
            client, server = (pkt.src, pkt.dst) if d == 0 else (pkt.dst, pkt.src)
            self.ips[0] = raw_u32(client)
            self.ips[1] = raw_u32(server)

    @property
    def complete(self) -> bool:
        """Nothing later in the flow can change libprotoident's answer (or only a retransmission could).

        TCP/UDP: a first payload in both directions, or both directions past
        the 32 KiB cap.  Any other transport is named from the transport
        alone (ICMP, Unsupported) once it is known.
        """
        proto = self.trans_proto
        if proto == TCP or proto == UDP:
            if self.payload_len[0] and self.payload_len[1]:
                return True
            return self.observed[0] > OBSERVED_CAP and self.observed[1] > OBSERVED_CAP
        return proto != 0

    def to_struct(self) -> LpiData:
        """The ``lpi_data_t`` to hand to ``lpi_guess_protocol``."""
        data = LpiData()
        for d in (0, 1):
            data.payload[d] = self.payload[d]
            data.seen_syn[d] = self.seen_syn[d]
            data.seqno[d] = self.seqno[d]
            data.observed[d] = self.observed[d]
            data.payload_len[d] = self.payload_len[d]
            data.ips[d] = self.ips[d]
        data.server_port = self.server_port
        data.client_port = self.client_port
        data.trans_proto = self.trans_proto
        return data
