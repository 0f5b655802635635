"""The data model shared by the core and every layer: Packet, FlowKey, Flow, Verdict.

All classes are slotted attrs classes: a busy capture creates millions of
packets and hundreds of thousands of flows, and slots keep both smaller and
faster.  Addresses stay as raw bytes (4 or 16) on the hot path and become text
only when a record is written.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from socket import inet_ntoa
from typing import Any, Callable, Generic, NamedTuple, TypeVar

import attrs

T = TypeVar("T")

#: Why a flow ended (``Flow.end_reason``, what records and ``dpi_flow_end`` see); "" while it lives.
END_FIN = "fin"
END_RST = "rst"
END_IDLE = "idle"
END_ACTIVE = "active"
END_EVICTED = "evicted"
END_EOF = "eof"
END_REUSED = "reused"
END_REASONS = ("", END_FIN, END_RST, END_IDLE, END_ACTIVE, END_EVICTED, END_EOF, END_REUSED)

#: ``Flow._bits`` (pipeline-owned; the flow table and the engine read and set it inline): FIN seen from the
#: client (1) and from the server (2), CLOSING (4), FINAL (8), end_reason's index in END_REASONS times
#: REASON_UNIT (REASON_MASK), and CLIENT_B, the top bit: the client is the key's second end.  At most
#: 255, one of the small ints CPython keeps made.  CLIENT_B is tested per packet, as ``bits >= CLIENT_B``:
#: CPython 3.11 specialises a comparison of two ints, not ``&`` (callgrind: 0.1% of a run's instructions).
FIN_BITS = 0x7
CLOSING = 0x4
FINAL = 0x8
REASON_UNIT = 0x10
REASON_MASK = 0x70
#: Every bit but the end reason's: ``bits & KEEP_REASONLESS | REASON_BITS[reason]`` sets a reason.
KEEP_REASONLESS = ~REASON_MASK
CLIENT_B = 0x80
assert len(END_REASONS) * REASON_UNIT <= CLIENT_B
#: The bits of each end reason.
REASON_BITS = {reason: i * REASON_UNIT for i, reason in enumerate(END_REASONS)}
#: The end reason of each value of ``Flow._bits``: ``REASON_OF[bits]``, read where flows end.
REASON_OF = tuple(END_REASONS[(bits & REASON_MASK) // REASON_UNIT] for bits in range(CLIENT_B << 1))

# Transport numbers the engine treats specially.
ICMP = 1
IGMP = 2
TCP = 6
UDP = 17
ICMPV6 = 58
SCTP = 132

TRANSPORT_NAMES: dict[int, str] = {
    ICMP: "ICMP", IGMP: "IGMP", TCP: "TCP", UDP: "UDP", ICMPV6: "ICMPV6", SCTP: "SCTP",
    47: "GRE", 50: "ESP", 51: "AH", 41: "IPV6", 4: "IPIP", 89: "OSPF", 103: "PIM",
    112: "VRRP",
}

#: Transports whose packets carry ports.
PORTED = frozenset({TCP, UDP, SCTP})

# TCP flag bits.
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

#: Direction of a packet within its flow.
C2S = 0
S2C = 1


def transport_name(proto: int) -> str:
    """Name of an IP protocol number as records print it (numbers for the rare ones)."""
    return TRANSPORT_NAMES.get(proto, str(proto))


def rounded(x: float, digits: int) -> float:
    """``round(x, digits)``, the same float, in about a third of its time for the usual record values.

    ``round`` formats the decimal digits and parses them back (~0.5 µs; three
    per flow record were a quarter of building it).  For 0 < x·10**digits < 2**51,
    ``m = x * 10.0**digits`` is within ulp(m)/2 <= 1/8 of the exact product;
    when m is within 3/8 of an integer q, the exact product is within 1/2 of
    q, so q / 10**digits is the decimal ``round`` picks, and the one IEEE
    division of two exact numbers gives the nearest float to it, as ``round``
    does.  Anything else (ties, zero and negatives for the sign of zero,
    huge values, NaN) goes to ``round``.
    """
    scale = _SCALE[digits]
    m = x * scale
    if 0.0 < m < 2251799813685248.0:  # 2**51
        q = round(m)
        if -0.375 < m - q < 0.375:
            return q / scale
    return round(x, digits)


_SCALE = [10.0 ** d for d in range(16)]


#: Address texts format_ip made, by address; cleared when it holds ADDRESS_TEXTS.
_ADDRESS_TEXT: dict[bytes, str] = {}
ADDRESS_TEXTS = 1 << 12


def format_ip(addr: bytes) -> str:
    """Printable form of a raw 4- or 16-byte address.

    A flow record prints two, and the same addresses recur across flows (a
    server's, a busy client's): a dict lookup is a tenth of inet_ntoa's time
    and a hundredth of ipaddress's for IPv6 (~3 µs).
    """
    text = _ADDRESS_TEXT.get(addr) if type(addr) is bytes else None
    if text is None:
        addr = memoryview(addr).tobytes()  # any bytes-like (not bytes(n) of an int: n zero bytes)
        text = inet_ntoa(addr) if len(addr) == 4 else str(ipaddress.IPv6Address(addr))
        if len(_ADDRESS_TEXT) >= ADDRESS_TEXTS:
            _ADDRESS_TEXT.clear()
        _ADDRESS_TEXT[addr] = text
    return text


def parse_ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


@attrs.define(slots=True)
class Packet:
    """One decoded IP packet.

    ``payload`` is the captured transport payload (possibly shorter than on
    the wire when the capture was cut by a snap length); ``payload_len`` is the
    length the IP header announces, which is what libprotoident wants.
    ``ip`` is the IP-layer bytes nDPI expects.
    """

    ts: float
    ip_version: int
    src: bytes
    dst: bytes
    proto: int
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    wire_len: int = 0
    payload: bytes = b""
    payload_len: int = 0
    ip: bytes = b""
    vlan: int = 0
    seq: int = 0
    number: int = 0
    #: Set for non-first IPv4 fragments: they count on their flow but carry no
    #: transport header of their own.
    fragment: bool = False


class FlowKey(NamedTuple):
    """Bidirectional flow identity: transport, VLAN and both endpoints, lower first."""

    proto: int
    vlan: int
    addr_a: bytes
    port_a: int
    addr_b: bytes
    port_b: int

    @classmethod
    def of(cls, pkt: Packet) -> "FlowKey":
        a = (pkt.src, pkt.sport)
        b = (pkt.dst, pkt.dport)
        if b < a:
            a, b = b, a
        return cls(pkt.proto, pkt.vlan, a[0], a[1], b[0], b[1])


#: FlowKey's own constructor without the generated ``__new__`` (a Python function) around it, for the
#: places that make a key per flow: ``new_key(FlowKey, (proto, vlan, addr_a, port_a, addr_b, port_b))``.
new_key = tuple.__new__


@attrs.define(slots=True)
class Verdict:
    """One layer's answer about a flow.

    ``confidence`` is in [0, 1]; the pipeline compares it with the configured
    threshold.  ``protocol`` is canonicalised by the pipeline, so a layer may
    return its own library's spelling.
    """

    protocol: str
    source: str = ""
    confidence: float = 1.0
    app: str | None = None
    category: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    #: Payload packets the deciding layer still wants to observe after the
    #: verdict (like nDPI's extra dissection: FTP control announcing data
    #: ports, TLS certificates).  Not part of the record.
    watch: int = 0
    #: What the watching layer looks for, if it can say so as a pattern (``re.compile(rb"...")``): a
    #: watched payload in which ``watch_for.search(payload)`` finds nothing is not shown to the layer
    #: (it still counts against ``watch``, so a watch ends as it would without a pattern).  A necessary
    #: condition is enough (FTP: the reply codes and commands that announce a data connection): the
    #: batch path then counts such packets inline, as those of a decided flow, instead of making each a
    #: Packet and a call.  Not part of the record.
    watch_for: re.Pattern[bytes] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "source": self.source,
            "confidence": rounded(self.confidence, 4),
            "app": self.app,
            "category": self.category,
            "metadata": self.metadata,
        }


#: Why a SharedVerdict refuses a change.
_SHARED = ("this bare Unknown verdict is one object shared by every flow its layer gave up on, so it "
           "cannot change; make your own: Verdict(verdict.protocol, verdict.source, verdict.confidence)")


class _NoMetadata(dict):  # type: ignore[type-arg]
    """A SharedVerdict's metadata: empty for good (a key added would show in every flow's record)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(_SHARED)

    __setitem__ = __delitem__ = __ior__ = update = setdefault = pop = popitem = clear = _refuse


@attrs.define(slots=True, frozen=True, eq=False)
class SharedVerdict(Verdict):
    """A bare Unknown (no app, category, metadata or watch): the engine keeps one per layer and
    confidence and gives it to every flow that gets one, instead of each flow keeping its own.

    A flow the heuristics layer has no candidate for keeps its "not ours" answer as long as it lives
    (the record names its source), and that Verdict with its empty metadata dict was 160 bytes of each.
    Frozen, since a change would reach every flow that holds it; equal to a Verdict of the same fields.
    """

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verdict):
            return NotImplemented
        return attrs.astuple(self, recurse=False) == attrs.astuple(other, recurse=False)

    __hash__ = None  # type: ignore[assignment]  # as Verdict's: equal to mutable ones


def shared_verdict(protocol: str, source: str, confidence: float) -> SharedVerdict:
    """The SharedVerdict of these fields."""
    return SharedVerdict(protocol, source, confidence, metadata=_NoMetadata())


class _MadeOnUse(Generic[T]):
    """A :class:`Flow` container that is made on first access and kept in the slot ``_<name>``."""

    def __init__(self, factory: Callable[[], T], doc: str) -> None:
        self.factory = factory
        self.__doc__ = doc
        self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj: object, owner: type | None = None) -> T:
        if obj is None:
            return self  # type: ignore[return-value]  # the class attribute: the descriptor itself
        value = getattr(obj, self.slot)
        if value is None:
            value = self.factory()
            setattr(obj, self.slot, value)
        return value

    def __set__(self, obj: object, value: T) -> None:
        setattr(obj, self.slot, value)


class _Rare:
    """What few flows ever have (:attr:`Flow.state`, :attr:`Flow.errors`), made on the first use of either,
    with the flow's number: the slot ``Flow._rare`` holds the number alone until then (a slot each was
    16 bytes more of every flow)."""

    __slots__ = ("number", "_state", "_errors")

    def __init__(self, number: int) -> None:
        self.number = number
        self._state: dict[str, Any] | None = None
        self._errors: list[str] | None = None


class _MadeOnRareUse(_MadeOnUse[T]):
    """A :class:`_MadeOnUse` container kept in the flow's :class:`_Rare` (made with it)."""

    def __get__(self, obj: object, owner: type | None = None) -> T:
        return super().__get__(None if obj is None else _rare_of(obj), owner)

    def __set__(self, obj: object, value: T) -> None:
        setattr(_rare_of(obj), self.slot, value)


def _packet_number(value: Any) -> int:
    """``value`` as a Flow's number: an int (or an integer type's value, numpy's), 0 or more."""
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"number is a packet's number in its source (an int), not {value!r}") from None
    if number < 0:
        raise ValueError(f"number is a packet's number in its source (0 or more), not {value!r}")
    return number


def _rare_of(flow: Any) -> _Rare:
    rare = flow._rare
    if type(rare) is int:
        rare = flow._rare = _Rare(rare)
    return rare


class _Payloads(_MadeOnUse[list]):  # type: ignore[type-arg]
    """:attr:`Flow.payloads`: a list, also while the engine keeps none (the slot then holds ``()``, its
    mark, and a read gets a new empty list, not stored)."""

    def __get__(self, obj: object, owner: type | None = None) -> list:  # type: ignore[type-arg]
        value = super().__get__(obj, owner)
        return [] if type(value) is tuple else value


class _OneOrMore(_MadeOnUse[list]):  # type: ignore[type-arg]
    """:attr:`Flow.verdicts`: the slot holds a flow's only verdict itself until a second comes or the
    list is asked for (then it becomes the list).  Most flows get one verdict, and a one-item list was
    ~90 bytes of each (the list, and room for four items once appended to)."""

    def __get__(self, obj: object, owner: type | None = None) -> list:  # type: ignore[type-arg]
        if obj is None:
            return self  # type: ignore[return-value]  # the class attribute: the descriptor itself
        value = getattr(obj, self.slot)
        if type(value) is not list:
            value = [] if value is None else [value]
            setattr(obj, self.slot, value)
        return value


@attrs.define(slots=True, eq=False, weakref_slot=False, init=False)
class Flow:
    """A bidirectional conversation; the client is whoever sent the first packet seen.

    When the capture shows a SYN/ACK before anything else, the flow table
    swaps the roles so the SYN sender is still the client.

    Its transport, VLAN and IP version are read from its key, and both its
    ends: which end of the key is the client's is a bit of the int that also
    holds ``fin_mask``, ``final`` and ``end_reason``.  ``number``, ``state``
    and ``errors`` share a slot, and it has no weak-reference slot: a million
    live flows are the table's memory, and those slots were 96 bytes of each
    (144 bytes, not 240).
    """

    key: FlowKey
    first_seen: float
    last_seen: float
    c2s_packets: int = 0
    s2c_packets: int = 0
    c2s_bytes: int = 0
    s2c_bytes: int = 0
    # payloads, state, verdicts, errors and notes (the _MadeOnUse attributes below) are made on first
    # use: most flows alive at any moment never touch most of them (a SYN scan's none), and five empty
    # containers were ~0.3 KB of a flow's ~1 KB.  The engine reads the private fields on its hot path.
    #: () while no layer looking at the flow reads its payloads (the engine keeps none then).
    _payloads: list[tuple[int, bytes]] | tuple[()] | None = None
    #: None, the only verdict, or the list of them (see _OneOrMore).
    _verdicts: list[Verdict] | Verdict | None = None
    verdict: Verdict | None = None
    #: Layers still looking at this flow, or the packets it holds before they start (pipeline-owned:
    #: see dpicore.engine.Pending).
    pending: Any = None
    #: ``fin_mask``, ``final``, which end is the client's and ``end_reason`` in one small int (see FINAL,
    #: CLIENT_B and REASON_UNIT).  The properties are for layers and callers; the pipeline reads the bits.
    _bits: int = 0
    #: The number, or a _Rare with it and the state and errors, once either is used.  Not in ``_bits``:
    #: with a number there that int is none of the small ints CPython keeps made, so every change of a
    #: bit makes a new one; callgrind put it at 0.2% of a run's instructions.
    _rare: int | _Rare = 0
    _notes: dict[str, Any] | None = None

    def __init__(self, key: FlowKey, client: bytes, client_port: int, first_seen: float, last_seen: float,
                 number: int = 0, c2s_packets: int = 0, s2c_packets: int = 0, c2s_bytes: int = 0,
                 s2c_bytes: int = 0, payloads: list[tuple[int, bytes]] | None = None,
                 verdicts: list[Verdict] | None = None, verdict: Verdict | None = None, pending: Any = None,
                 notes: dict[str, Any] | None = None, state: dict[str, Any] | None = None,
                 errors: list[str] | None = None, server: bytes | None = None, server_port: int | None = None
                 ) -> None:
        """``key`` holds the client's end and the server's (the ends are read from it: ``client`` and
        ``client_port`` say which is the client's, ``server`` and ``server_port``, when given, are checked).
        The first five by position (the flow table's call), the rest by name.  A positional call written
        for the fields the flow had before (server and its port after the client's port) fails: its first
        time lands on ``number``."""
        # No keyword-only parameters: CPython fills a missing one's default by a dict lookup, a positional
        # one's from a tuple, and the flow table makes a flow per new conversation.
        self.key = key
        if client == key[2] and client_port == key[3]:
            self._bits = 0
        elif client == key[4] and client_port == key[5]:
            self._bits = CLIENT_B
        else:
            raise ValueError(f"the client's end {client!r}:{client_port!r} is not one of the key's: {key!r}")
        self.first_seen = first_seen
        self.last_seen = last_seen
        self.c2s_packets = c2s_packets
        self.s2c_packets = s2c_packets
        self.c2s_bytes = c2s_bytes
        self.s2c_bytes = s2c_bytes
        self._payloads = payloads
        self._verdicts = verdicts
        self.verdict = verdict
        self.pending = pending
        self._rare = number if type(number) is int and number >= 0 else _packet_number(number)
        self._notes = notes
        if state is not None or errors is not None or server is not None or server_port is not None:
            self._given(state, errors, server, server_port)

    def _given(self, state: dict[str, Any] | None, errors: list[str] | None, server: bytes | None,
               server_port: int | None) -> None:
        """The constructor's rarely given arguments."""
        if state is not None:
            self.state = state
        if errors is not None:
            self.errors = errors
        if server not in (None, self.server) or server_port not in (None, self.server_port):
            raise ValueError(f"the server's end {server!r}:{server_port!r} is not the key's other end: {self.key!r}")

    payloads = _Payloads(
        list, "First payloads per direction, in order, bounded by the flow table; empty (kept by "
              "nobody) while no layer looking at the flow reads them (LayerInfo.reads_payloads), once "
              "no layer looks at the flow (decided, or every layer left) and after its end.")
    state = _MadeOnRareUse(dict, "Per-layer private state, keyed by layer id.")
    verdicts = _OneOrMore(list, "Every verdict accepted for the flow, in order.")
    errors = _MadeOnRareUse(list, "What went wrong in a layer for this flow, a line each.")
    notes = _MadeOnUse(
        dict, "Extra annotations a layer wants other layers to see (e.g. an expected FTP data port).")

    # Each end is read from the key (its fields by index: 2, 3 the first end, 4, 5 the second).
    @property
    def client(self) -> bytes:
        return self.key[4] if self._bits >= CLIENT_B else self.key[2]

    @property
    def client_port(self) -> int:
        return self.key[5] if self._bits >= CLIENT_B else self.key[3]

    @property
    def server(self) -> bytes:
        return self.key[2] if self._bits >= CLIENT_B else self.key[4]

    @property
    def server_port(self) -> int:
        return self.key[3] if self._bits >= CLIENT_B else self.key[5]

    def ends(self) -> tuple[bytes, int, bytes, int]:
        """(client address, client port, server address, server port): for a caller wanting all four."""
        a_addr, a_port, b_addr, b_port = self.key[2:]
        if self._bits >= CLIENT_B:
            return b_addr, b_port, a_addr, a_port
        return a_addr, a_port, b_addr, b_port

    @property
    def number(self) -> int:
        """The number of the packet that opened the flow in its source (for stable ordering)."""
        rare = self._rare
        return rare if type(rare) is int else rare.number

    @number.setter
    def number(self, value: int) -> None:
        number = _packet_number(value)
        if type(self._rare) is int:
            self._rare = number
        else:
            self._rare.number = number  # type: ignore[union-attr]

    @property
    def fin_mask(self) -> int:
        """TCP: FIN seen from the client (1) and from the server (2); CLOSING (4) once both were seen or on
        RST, when the flow ends after its last stragglers."""
        return self._bits & FIN_BITS

    @fin_mask.setter
    def fin_mask(self, value: int) -> None:
        if value & ~FIN_BITS:
            raise ValueError(f"fin_mask is three bits, not {value!r}")
        self._bits = self._bits & ~FIN_BITS | value

    @property
    def final(self) -> bool:
        """The flow is decided, or no layer looks at it any more: its packets only count."""
        return self._bits & FINAL != 0

    @final.setter
    def final(self, value: bool) -> None:
        self._bits = self._bits | FINAL if value else self._bits & ~FINAL

    @property
    def end_reason(self) -> str:
        """Why the flow ended: one of END_REASONS ("" while it lives)."""
        return REASON_OF[self._bits]

    @end_reason.setter
    def end_reason(self, value: str) -> None:
        bits = REASON_BITS.get(value)
        if bits is None:
            raise ValueError(f"end_reason must be one of {END_REASONS}, not {value!r}")
        self._bits = self._bits & KEEP_REASONLESS | bits

    def add_verdict(self, verdict: Verdict) -> None:
        """Append to :attr:`verdicts`, a first verdict kept without a list around it (see _OneOrMore)."""
        verdicts = self._verdicts
        if verdicts is None:
            self._verdicts = verdict
        elif type(verdicts) is list:
            verdicts.append(verdict)
        else:
            self._verdicts = [verdicts, verdict]

    @property
    def proto(self) -> int:
        """The transport protocol number (TCP, UDP, ...)."""
        return self.key.proto

    @property
    def vlan(self) -> int:
        return self.key.vlan

    @property
    def ip_version(self) -> int:
        return 4 if len(self.key[2]) == 4 else 6

    @property
    def packets(self) -> int:
        return self.c2s_packets + self.s2c_packets

    @property
    def bytes(self) -> int:
        return self.c2s_bytes + self.s2c_bytes

    def direction_of(self, pkt: Packet) -> int:
        """C2S when ``pkt`` comes from the client side, S2C otherwise: the client's end is the key's first
        unless CLIENT_B says the second (Engine.feed has this inline)."""
        key = self.key
        if self._bits >= CLIENT_B:
            return C2S if pkt.src == key[4] and pkt.sport == key[5] else S2C
        return C2S if pkt.src == key[2] and pkt.sport == key[3] else S2C

    def first_payload(self, direction: int) -> bytes | None:
        for d, data in self.payloads:
            if d == direction:
                return data
        return None

    def stream(self, direction: int) -> bytes:
        """The captured payload bytes of one direction joined (bounded by the table's payload cap)."""
        return b"".join(data for d, data in self.payloads if d == direction)
