"""What the model sees of a flow: a fixed-length vector built from its first packets.

A flow is summarised by its first :data:`N_PACKETS` packets, payload-less
ones included (handshakes and ACK patterns carry shape too): each packet's
direction, payload size (the length the IP header announces, so a capture's
snap length does not change it), inter-arrival time and TCP flags, plus the
first :data:`N_BYTES` bytes of the first payload in each direction and the
transport.  Two facts about ports that describe shape rather than name a
protocol are included (both ends on the same port, as MDNS, NTP or IKE do;
a privileged server port); the port numbers themselves are not, so the model
cannot learn "443 means TLS" and stays useful where port-based guesses fail.
For each first payload a few length-field checks tell whether a 2- or 4-byte
integer near its start equals the payload's length (TLS records, DNS over
TCP, TDS, MongoDB, …): a framing habit that generalises across captures
better than raw byte values do.  The summary is collected packet by packet in the layer's hooks
(:func:`add`), and turned into numbers in one go with numpy
(:func:`vector`), so the same code serves the live layer, training and
evaluation: what the model was trained on is exactly what it is asked about.

Absent values (a flow with fewer packets, no payload in one direction,
a payload shorter than :data:`N_BYTES`) are ``-1``: trees split on them like
on any value, and no NaN handling is needed in our own inference.
"""

from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

#: Packets per flow the layer looks at (and the model was trained on).
N_PACKETS = 8
#: Leading bytes of the first payload per direction.
N_BYTES = 16
#: Bytes of the first payload per direction used for the printable/diversity ratios.
N_SCAN = 256
#: Version of this feature layout; a model trained on another layout is refused.
FEATURE_VERSION = 1

MISSING = -1.0

# Printable ASCII plus TAB, CR, LF: text protocols (HTTP, SMTP, SIP, RTSP) versus binary/encrypted ones.
_PRINTABLE = np.zeros(256, dtype=bool)
_PRINTABLE[32:127] = True
_PRINTABLE[[9, 10, 13]] = True


#: Length-field checks on a first payload: (offset, width, big endian, value = length - delta).
LENGTH_RULES: tuple[tuple[int, int, bool, int], ...] = (
    (0, 2, True, 0), (0, 2, True, 2), (2, 2, True, 0), (3, 2, True, 5), (0, 4, True, 0),
    (0, 4, True, 4), (0, 4, False, 0), (0, 2, False, 0), (1, 3, True, 4), (0, 3, False, 4),
)


def _names() -> tuple[str, ...]:
    names = ["transport", "ports_equal", "server_port_low"]
    for i in range(N_PACKETS):
        names += [f"p{i}_dir", f"p{i}_size", f"p{i}_iat", f"p{i}_flags"]
    names += ["packets", "c2s_packets", "s2c_packets", "c2s_payload_packets", "s2c_payload_packets",
              "c2s_payload_bytes", "s2c_payload_bytes", "duration", "first_payload_dir"]
    for d in ("c2s", "s2c"):
        names += [f"{d}_len", f"{d}_printable", f"{d}_distinct", f"{d}_first_index"]
        names += [f"{d}_b{j}" for j in range(N_BYTES)]
        names += [f"{d}_len_{o}_{w}{'be' if be else 'le'}_{delta}" for o, w, be, delta in LENGTH_RULES]
    return tuple(names)


#: The name of every column of a feature vector, in order.
FEATURE_NAMES: tuple[str, ...] = _names()
N_FEATURES = len(FEATURE_NAMES)
#: Leading bytes of each first payload that a model's byte guards may constrain (see dpi_ml.train).
GUARD_BYTES = 2
GUARD_COLUMNS: tuple[int, ...] = tuple(FEATURE_NAMES.index(f"{d}_b{j}") for d in ("c2s", "s2c")
                                       for j in range(GUARD_BYTES))


def feature_spec() -> dict[str, object]:
    """What a model file records about the features it was trained on; compared at load time."""
    return {"version": FEATURE_VERSION, "packets": N_PACKETS, "bytes": N_BYTES, "scan": N_SCAN,
            "names": list(FEATURE_NAMES)}


#: A flow summary is a plain ``bytearray``: the layer keeps one per flow it is still watching, and a
#: subclass's instances carry a 16-byte garbage-collector header besides (every heap type's instances
#: are tracked), so the summary has functions, not methods.
FlowSummary = bytearray

#: A summary's head: the packets recorded (low four bits) and whether the layer answered (_DONE), the
#: transport, the index + 1 of the packet that carried the first payload (0: none yet) of each direction
#: (client to server in the low four bits, back in the high four), the client and the server port; the
#: byte offsets of the first three.
_HEAD = struct.Struct("<BBBHH")
_STATE, _TRANSPORT, _INDEX = 0, 1, 2
_COUNT_BITS, _DONE = 0x0F, 0x80
assert N_PACKETS <= _COUNT_BITS, "the packet count and each first-payload index are four bits of the head"
#: Then each packet: time, direction, payload size on the wire, TCP flags.
_PACKET = struct.Struct("<dBIH")
#: The packet that carried a direction's first payload is followed by what the features read of that
#: payload: its scanned length (at most N_SCAN) less one, its printable bytes, its distinct bytes less
#: one (a payload has at least one of each, and 256 fits in no byte) and its leading N_BYTES bytes.
#: Appended when it comes, not reserved for both directions in the head: a flow of one packet with
#: payload is 7 + 15 + 20 bytes, a 48-byte block with the bytearray's terminating zero (64 with both
#: directions' room reserved), a flow of one packet without any 32 bytes.
_FIRST = struct.Struct(f"<BHB{N_BYTES}s")
_PRINTABLE_BYTES = bytes(np.flatnonzero(_PRINTABLE).tolist())


def new_summary(transport: int, client_port: int = 0, server_port: int = 0) -> FlowSummary:
    """An empty summary of a flow of this transport between these ports."""
    return bytearray(_HEAD.pack(0, transport, 0, client_port, server_port))


def add(summary: FlowSummary, ts: float, direction: int, size: int, flags: int, payload: bytes) -> bool:
    """Record one packet; True once :data:`N_PACKETS` packets are in."""
    state = summary[_STATE]
    n = state & _COUNT_BITS
    if n >= N_PACKETS:
        return True
    try:
        record = _PACKET.pack(ts, direction, size, flags)
    except struct.error:  # a Packet made through the API with values no capture gives
        record = _PACKET.pack(ts, 1 if direction else 0, min(max(size, 0), 0xFFFFFFFF), flags & 0xFFFF)
    summary += record
    summary[_STATE] = state + 1  # the count, below N_PACKETS: it does not reach the done bit
    if payload:
        d = 1 if direction else 0
        index = summary[_INDEX]
        if not (index >> 4 * d) & 0x0F:
            summary[_INDEX] = index | (n + 1) << 4 * d
            scan = bytes(payload[:N_SCAN])
            printable = len(scan) - len(scan.translate(None, _PRINTABLE_BYTES))
            summary += _FIRST.pack(len(scan) - 1, printable, len(set(scan)) - 1, scan)
    return n + 1 >= N_PACKETS


def count(summary: FlowSummary) -> int:
    """Packets recorded (at most :data:`N_PACKETS`)."""
    return summary[_STATE] & _COUNT_BITS


def is_done(summary: FlowSummary) -> bool:
    """The layer has answered (or abstained) for this flow (see :func:`mark_done`)."""
    return bool(summary[_STATE] & _DONE)


def mark_done(summary: FlowSummary) -> None:
    summary[_STATE] |= _DONE


def transport(summary: FlowSummary) -> int:
    return summary[_TRANSPORT]


def ports(summary: FlowSummary) -> tuple[int, int]:
    """(client port, server port)."""
    return _HEAD.unpack_from(summary)[3:]


def packets(summary: FlowSummary) -> list[tuple[float, int, int, int]]:
    """(time, direction, payload size on the wire, TCP flags) of each recorded packet, in order."""
    index = summary[_INDEX]
    firsts = (index & 0x0F, index >> 4)
    out = []
    at = _HEAD.size
    for k in range(1, count(summary) + 1):
        out.append(_PACKET.unpack_from(summary, at))
        at += _PACKET.size + (_FIRST.size if k in firsts else 0)
    return out


def first_index(summary: FlowSummary) -> tuple[int, int]:
    """Index of the packet that carried the first payload, client to server and back (-1: none)."""
    index = summary[_INDEX]
    return (index & 0x0F) - 1, (index >> 4) - 1


def has_payload(summary: FlowSummary) -> bool:
    """Some recorded packet carried payload (in either direction)."""
    return bool(summary[_INDEX])


def first(summary: FlowSummary, direction: int) -> tuple[int, int, int, bytes] | None:
    """The first payload of a direction as kept: (scanned length, printable bytes, distinct bytes,
    leading bytes); None when the direction sent none yet."""
    index = summary[_INDEX]
    k = (index >> 4 * direction) & 0x0F  # its packet's index + 1
    if not k:
        return None
    other = (index >> 4 * (1 - direction)) & 0x0F
    # Past the head, k packets, and the other direction's record if its packet came first.
    at = _HEAD.size + k * _PACKET.size + (_FIRST.size if 0 < other < k else 0)
    length, printable, distinct, head = _FIRST.unpack_from(summary, at)
    return length + 1, printable, distinct + 1, head[:min(length + 1, N_BYTES)]


_RULE_DELTAS = np.array([d for _, _, _, d in LENGTH_RULES], dtype=np.float64)
_RULE_END = np.array([o + w for o, w, _, _ in LENGTH_RULES])
#: (rule, byte position) weights: 256**k for the k-th least significant byte, 0 outside the field.
_RULE_WEIGHTS = np.zeros((len(LENGTH_RULES), 8))
for _r, (_o, _w, _be, _) in enumerate(LENGTH_RULES):
    for _k in range(_w):
        _RULE_WEIGHTS[_r, _o + _k] = 256.0 ** ((_w - 1 - _k) if _be else _k)
_PAYLOAD_WIDTH = 4 + N_BYTES + len(LENGTH_RULES)


def _payload_columns(first: tuple[int, int, int, bytes] | None, index: int, size: int) -> np.ndarray:
    """len, printable ratio, distinct-byte ratio, packet index, N_BYTES byte values, length checks.

    ``first`` is what :func:`first` kept of the payload; ``size``
    the packet's payload length on the wire (what a length field describes
    even when the capture was cut short).
    """
    out = np.full(_PAYLOAD_WIDTH, MISSING)
    if first is None:
        return out
    length, printable, distinct, head = first
    raw = np.frombuffer(head, dtype=np.uint8)
    out[0] = size
    out[1] = printable / length
    out[2] = distinct / length
    out[3] = index
    out[4:4 + raw.size] = raw
    first8 = np.zeros(8)
    first8[:min(8, raw.size)] = raw[:8]
    values = _RULE_WEIGHTS @ first8
    out[4 + N_BYTES:] = np.where(_RULE_END <= length, values == size - _RULE_DELTAS, MISSING)
    return out


def _opener(first_index: tuple[int, int]) -> float:
    """Which direction sent payload first (0 client, 1 server: server-speaks-first protocols), -1 none."""
    c, s = first_index
    if c < 0 and s < 0:
        return MISSING
    if s < 0 or 0 <= c < s:
        return 0.0
    return 1.0


_PER_PACKET = 3
_AGGREGATES = _PER_PACKET + 4 * N_PACKETS
_PAYLOADS = _AGGREGATES + 9


def vector(summary: FlowSummary) -> np.ndarray:
    """The feature vector (float64, length :data:`N_FEATURES`) of one flow summary.

    The per-packet part has at most :data:`N_PACKETS` entries, so it is
    assembled from Python lists (numpy's per-call cost would dominate);
    everything per byte is numpy.
    """
    out = np.full(N_FEATURES, MISSING)
    out[0] = transport(summary)
    client_port, server_port = ports(summary)
    if server_port or client_port:
        out[1] = client_port == server_port
        out[2] = server_port < 1024
    recorded = packets(summary)
    n = len(recorded)
    sizes: Sequence[int] = ()
    if n:
        ts, dirs, sizes, flags = zip(*recorded)
        iat = [0.0] + [max(b - a, 0.0) for a, b in zip(ts, ts[1:])]  # captures are not always in time order
        out[_PER_PACKET:_PER_PACKET + 4 * n] = [v for quad in zip(dirs, sizes, iat, flags) for v in quad]
        c2s = dirs.count(0)
        c2s_sizes = [z for d, z in zip(dirs, sizes) if d == 0]
        s2c_sizes = [z for d, z in zip(dirs, sizes) if d != 0]
        out[_AGGREGATES:_PAYLOADS] = (
            n, c2s, n - c2s, sum(1 for z in c2s_sizes if z > 0), sum(1 for z in s2c_sizes if z > 0),
            sum(c2s_sizes), sum(s2c_sizes), ts[-1] - ts[0], _opener(first_index(summary)))
    width = _PAYLOAD_WIDTH
    for d, i in enumerate(first_index(summary)):
        out[_PAYLOADS + d * width:_PAYLOADS + (d + 1) * width] = _payload_columns(first(summary, d), i,
                                                                               sizes[i] if i >= 0 else 0)
    return out


def matrix(summaries: Sequence[FlowSummary]) -> np.ndarray:
    """Feature vectors of many flows as one (n, N_FEATURES) array."""
    if not summaries:
        return np.empty((0, N_FEATURES))
    return np.stack([vector(s) for s in summaries])
