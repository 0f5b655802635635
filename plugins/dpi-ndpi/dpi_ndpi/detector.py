"""One nDPI detection module and the per-flow state fed into it.

The feeding rules copy what ndpiReader 4.2 does (``example/reader_util.c``,
``packet_processing``), because the layer is meant to answer exactly what
ndpiReader answers:

* every packet of the flow goes in, in order, SYNs and pure ACKs included,
  as IP-layer bytes with the capture time in milliseconds;
* packets ndpiReader drops never reach nDPI and do not count: non-first
  IPv4/IPv6 fragments and packets cut shorter than their IP length says
  (and, as guards against hostile input, packets whose bytes say another
  transport than the flow's first packet, and TCP/UDP packets whose header
  is not whole within their IP length); packets over 65,000 bytes are cut
  to that length (see :func:`ndpi_view` and :func:`_cut`: faults of nDPI
  4.2 that fuzzing found, two segfaults and an endless loop);
* detection is complete when nDPI names an application protocol and has no
  extra dissection left (``ndpi_extra_dissection_possible``: TLS certificates,
  DNS answers…), or when the flow has gone past its packet budget (more than
  80 TCP or 24 UDP packets, ndpiReader's ``-T``/``-U`` defaults), and then a
  still unknown flow is handed to ``ndpi_detection_giveup`` (guess by port and
  IP, like ndpiReader without ``-d``);
* a flow that ends first gets the same give-up.

Nothing is replayed: each packet is fed once, and the flow's nDPI memory is
freed (``ndpi_free_flow_data``, its struct zeroed for the next flow: see
:mod:`dpi_ndpi.arena`) as soon as the layer is done with it.
"""

from __future__ import annotations

from typing import Any

import attrs

from dpicore.model import TCP, UDP, Packet

from .arena import FlowArena

#: ndpiReader 4.2's defaults: give up after this many packets (``-T`` / ``-U``).
TCP_PACKETS = 80
UDP_PACKETS = 24

_MAX_IP = 0xFFFF  # nDPI takes the length as an unsigned short
#: Longest IP packet handed to nDPI (see _cut).
MAX_TO_NDPI = 65_000


@attrs.define(slots=True, frozen=True)
class NdpiResult:
    """What nDPI said about a flow, in nDPI's own words."""

    master: str
    app: str
    #: ``Master.App`` as ndpiReader prints it (``TLS.Google``, ``DNS``, ``Unknown``).
    label: str
    category: str
    #: nDPI's confidence name: ``DPI``, ``DPI (cache)``, ``Match by IP``, ``Match by port``, ``Unknown``.
    confidence: str
    host: str
    #: True when the answer came from ``ndpi_detection_giveup``.
    gave_up: bool = False


_IPV6_SKIPPED = frozenset((0, 43, 44, 60, 135))  # extension headers nDPI 4.2 walks past
_IPV6_NO_NEXT = 59
_IPV6_FRAGMENT = 44


def ndpi_view(ip: bytes, fragment: bool) -> int:
    """(IP version << 8) | L4 protocol as nDPI will parse these bytes; 0 when they must not reach it.

    0 for what ndpiReader drops before nDPI sees it: non-first IPv4/IPv6
    fragments and packets captured shorter than their IP length says (nDPI
    would reject those itself, but count them against the flow).  The L4
    protocol follows nDPI 4.2's own walk over IPv6 extension headers, so the
    layer can keep one flow's packets on one transport: nDPI keeps TCP and
    UDP state in a union, and a packet of the other transport fed into a
    flow crashes it.

    0 also for a TCP or UDP packet whose header is not whole within the IP
    length (an IPv4 total length below its header's, an IPv6 payload length
    of 0, a TCP data offset past the end): nDPI 4.2 then parses it with no
    transport header, and its extra dissection of BitTorrent and QUIC flows
    reads through the missing one (a segfault, found by fuzzing; such a
    packet has no payload nDPI could use).
    """
    layout = _layout(ip, fragment)
    if layout is None:
        return 0
    return (layout[0] << 8) | layout[1]


#: NdpiFlow.cell: the view of the first packet fed (0: none yet; an ndpi_view value is below 0x700), the
#: flow's struct (a FlowArena slot number, 0: none yet) and the packets fed (at most _COUNT_MAX), in one
#: int below 2**60, so one 32-byte object per flow; _RELEASED once released.
_VIEW_BITS = 11
_VIEW_MASK = (1 << _VIEW_BITS) - 1
_SLOT_SHIFT = _VIEW_BITS
_SLOT_MASK = (1 << 32) - 1
_COUNT_SHIFT = _SLOT_SHIFT + 32
_COUNT = 1 << _COUNT_SHIFT
#: The count stops there (the engine offers a layer at most 65,535 packets of a flow: LayerInfo.max_packets).
_COUNT_MAX = (1 << 17) - 1
_FULL = _COUNT_MAX << _COUNT_SHIFT
_RELEASED = -1


def _layout(ip: bytes, fragment: bool) -> tuple[int, int, int, int] | None:
    """(IP version, L4 protocol, where the L4 header starts, where the IP length says the packet
    ends) as nDPI 4.2 reads ``ip``; None for what must not reach it (see :func:`ndpi_view`)."""
    n = len(ip)
    if fragment or n < 20 or n > _MAX_IP:
        return None
    version = ip[0] >> 4
    if version == 4:
        ihl = (ip[0] & 0x0F) * 4
        end = (ip[2] << 8) | ip[3]
        if ihl < 20 or ihl > n or end > n or ((ip[6] & 0x1F) | ip[7]):
            return None
        return _whole(4, ip[9], ip, ihl, end)
    if version != 6 or n < 40:
        return None
    end = 40 + ((ip[4] << 8) | ip[5])
    if end > n:
        return None
    nxt, pos = ip[6], 40
    while nxt in _IPV6_SKIPPED or nxt == _IPV6_NO_NEXT:
        if nxt == _IPV6_NO_NEXT:
            return None
        if nxt == _IPV6_FRAGMENT:
            if end - pos < 8 or ((ip[pos + 2] << 8) | ip[pos + 3]) >> 3:
                return None
            nxt, pos = ip[pos], pos + 8
            continue
        if end - pos < 2:
            return None
        size = (ip[pos + 1] + 1) * 8
        if end - pos < size:
            return None
        nxt, pos = ip[pos], pos + size
    return _whole(6, nxt, ip, pos, end)


def _whole(version: int, proto: int, ip: bytes, pos: int, end: int) -> tuple[int, int, int, int] | None:
    """The layout, unless a TCP or UDP header is not whole between ``pos`` and ``end``."""
    if proto == TCP and (end - pos < 20 or (ip[pos + 12] >> 4) * 4 > end - pos):
        return None
    if proto == UDP and end - pos < 8:
        return None
    return version, proto, pos, end


def _cut(ip: bytes) -> bytes:
    """``ip`` cut to :data:`MAX_TO_NDPI` bytes, its IP (and UDP) length fields saying so.

    nDPI 4.2's DNS dissector walks a query name with a 16-bit offset: in a
    packet near 64 KB the offset wraps past 65,535 to the start of the
    packet and the walk never ends (ntop/nDPI#1803, fixed after 4.2; found
    here by fuzzing: one 65,535-byte UDP packet to port 53 hung the run).
    What is cut is the end of a packet far longer than any header nDPI reads.
    """
    layout = _layout(ip, False)
    if layout is None or layout[3] <= MAX_TO_NDPI:
        return ip
    version, proto, pos, _ = layout
    out = bytearray(ip[:MAX_TO_NDPI])
    if version == 4:
        out[2:4] = MAX_TO_NDPI.to_bytes(2, "big")
    else:
        out[4:6] = (MAX_TO_NDPI - 40).to_bytes(2, "big")
    if proto == UDP:
        out[pos + 4:pos + 6] = (MAX_TO_NDPI - pos).to_bytes(2, "big")
    return bytes(out)


class Detector:
    """One nDPI detection module: made by ``dpi_configure``, closed by ``dpi_unconfigure``.

    Flows keep a reference to the detector that created them, so a module is
    only freed once it is closed *and* its last flow has been released; a
    flow ended after its engine closed still frees its memory safely.
    """

    def __init__(self, abi: Any, tcp_packets: int = TCP_PACKETS, udp_packets: int = UDP_PACKETS,
                 guess: bool = True) -> None:
        self.abi = abi
        self.tcp_packets = tcp_packets
        self.udp_packets = udp_packets
        self.guess = guess
        self.module: int | None = abi.open_module()
        #: nDPI protocol names by id.
        self.names: list[str] = abi.protocol_names(self.module)
        self._categories: dict[int, str] = {}
        self.live = 0
        self.closed = False
        self._flow_types: dict[int | None, type[NdpiFlow]] = {}
        #: The flows' structs.
        self.arena = FlowArena(abi)

    def new_flow(self, transport: int) -> "NdpiFlow":
        if self.module is None:
            raise RuntimeError("the nDPI module is closed")
        budget = self.tcp_packets if transport == TCP else self.udp_packets if transport == UDP else None
        self.live += 1
        return self.flow_type(budget)()

    def flow_type(self, budget: int | None) -> "type[NdpiFlow]":
        """The NdpiFlow subclass of this detector's flows that nDPI gets ``budget`` packets of (None: no
        bound) before its give-up answer: both are class attributes, not slots of every flow."""
        kind = self._flow_types.get(budget)
        if kind is None:
            kind = self._flow_types[budget] = type("NdpiFlow", (NdpiFlow,), {
                "__slots__": (), "detector": self, "budget": budget, "__module__": __name__})
        return kind

    def name(self, proto_id: int) -> str:
        names = self.names
        return names[proto_id] if proto_id < len(names) else self.abi.protocol_name(self.module, proto_id)

    def category(self, category: int) -> str:
        name = self._categories.get(category)
        if name is None:
            name = self._categories[category] = self.abi.category_name(self.module, category)
        return name

    def close(self) -> None:
        """No new flows; free the module now, or when its last flow is released."""
        self.closed = True
        if self.live == 0:
            self._free()

    def _released(self) -> None:
        self.live -= 1
        if self.closed and self.live == 0:
            self._free()

    def _free(self) -> None:
        module, self.module = self.module, None
        if module is not None:
            self.abi.close_module(module)
            self.arena.close()


class NdpiFlow:
    """nDPI's state for one flow: a zeroed ``ndpi_flow_struct`` the layer owns.

    nDPI allocates inside it (host names, TLS certificate data, reassembly
    buffers), so :meth:`release` (``ndpi_free_flow_data``; the struct goes back
    to the detector's :class:`~dpi_ndpi.arena.FlowArena`) must run once the
    layer is done; ``__del__`` does it for a flow nobody ended.

    The struct is made when nDPI is first handed a packet of the flow, not
    with the flow: a flow another layer names from its first payload, and a
    bare SYN of a scan or flood (whose held handshake nDPI only gets at the
    flow's end, if at all), then never cost one while they live.
    """

    # Two slots, 48 bytes: the detector and the budget are class attributes (Detector.flow_type), the
    # view, the struct's slot and the count one int (see _VIEW_BITS), "done" is no clock (six slots were
    # 80 bytes of every flow nDPI inspects, at a million such flows the 1.5 GB bound).
    __slots__ = ("cell", "last_ts")
    #: The detector that made the flow (it is freed once closed and its last flow released).
    detector: Detector
    #: Packets nDPI gets before its give-up answer (None: no bound).
    budget: int | None

    def __init__(self) -> None:
        #: The first packet's view, the struct's slot and the packets fed (see _VIEW_BITS).
        self.cell = 0
        #: The latest capture time handed to nDPI; None once it has answered (none is handed to it then).
        self.last_ts: float | None = 0.0

    @property
    def done(self) -> bool:
        """nDPI has given its answer for the flow (detected, or gave up)."""
        return self.last_ts is None

    @property
    def released(self) -> bool:
        """The flow's nDPI memory is freed (see :meth:`release`)."""
        return self.cell == _RELEASED

    @property
    def packets(self) -> int:
        """Packets fed to nDPI (0 once released)."""
        return max(self.cell, 0) >> _COUNT_SHIFT

    @property
    def view(self) -> int:
        """:func:`ndpi_view` of the first packet fed: every later one must match it (0: none fed yet,
        _RELEASED once released)."""
        cell = self.cell
        return cell if cell == _RELEASED else cell & _VIEW_MASK

    @property
    def address(self) -> int:
        """The ``ndpi_flow_struct``'s address once nDPI has been handed a packet (0 before, and once freed)."""
        slot = (max(self.cell, 0) >> _SLOT_SHIFT) & _SLOT_MASK
        return self.detector.arena.address(slot) if slot else 0

    def _struct(self) -> int:
        """The flow's struct's address, made on first use (the flow is not released)."""
        cell = self.cell
        slot = (cell >> _SLOT_SHIFT) & _SLOT_MASK
        arena = self.detector.arena
        if not slot:
            slot = arena.take()
            self.cell = cell | slot << _SLOT_SHIFT
        return arena.address(slot)

    def feed(self, packet: Packet) -> NdpiResult | None:
        """Hand one packet to nDPI; the result once detection is complete, else None."""
        last = self.last_ts
        if last is None:
            return None  # done
        ip = packet.ip
        if type(ip) is not bytes:
            ip = bytes(ip)
        view = ndpi_view(ip, packet.fragment)
        cell = self.cell
        first = cell & _VIEW_MASK
        if not view or (view != first and first) or cell == _RELEASED:
            return None  # dropped by ndpiReader, another IP version/transport than the flow's, or released
        if cell < _FULL:
            cell += _COUNT
        self.cell = cell = cell | view
        count = cell >> _COUNT_SHIFT
        ts = packet.ts
        if ts < last:  # never backwards (ndpiReader clamps its capture clock the same way)
            ts = last
        # The packet's own float (the flow's last_seen holds it too), not the milliseconds: an int
        # of that size would be another 32-byte object per flow.
        self.last_ts = ts
        ms = int(round(ts * 1e6)) // 1000
        det = self.detector
        abi = det.abi
        address = self._struct()
        if len(ip) > MAX_TO_NDPI:
            ip = _cut(ip)
        proto = abi.process(det.module, address, ip, len(ip), ms)
        budget = self.budget
        enough = budget is not None and count > budget
        if not enough and proto.app_protocol == 0:
            return None
        if not enough and abi.extra_possible(det.module, address):
            return None  # detected, but nDPI still wants packets (certificate, DNS answer…)
        self.last_ts = None
        if proto.app_protocol == 0:
            return self._result(det, address, abi.giveup(det.module, address, det.guess), gave_up=True)
        return self._result(det, address, proto)

    def giveup(self) -> NdpiResult:
        """nDPI's best answer for a flow that ends (or is cut) before detection completed."""
        if self.cell == _RELEASED:
            raise RuntimeError("the flow's nDPI state is already freed")
        det = self.detector
        self.last_ts = None
        address = self._struct()
        return self._result(det, address, det.abi.giveup(det.module, address, det.guess), gave_up=True)

    def _result(self, det: Detector, address: int, proto: Any, gave_up: bool = False) -> NdpiResult:
        abi = det.abi
        return NdpiResult(
            master=det.name(proto.master_protocol), app=det.name(proto.app_protocol),
            label=abi.label(det.module, proto), category=det.category(proto.category),
            confidence=abi.confidence_name(abi.confidence(address)), host=abi.host(address),
            gave_up=gave_up)

    def release(self) -> None:
        """Free what nDPI allocated for the flow and give its struct back (idempotent)."""
        cell = self.cell
        if cell == _RELEASED:
            return
        self.cell = _RELEASED
        det = self.detector
        slot = (cell >> _SLOT_SHIFT) & _SLOT_MASK
        if slot:
            det.arena.give_back(slot)
        det._released()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass
