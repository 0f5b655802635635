"""Helpers to test heuristics on bare payloads, without captures.

* :func:`run_detector` calls one detector the way the dispatcher does (the
  direction's stream, per-direction index, per-flow memo) but catches
  nothing, so a detector that raises fails the test that called it;
* :func:`classify` runs the whole layer (pre-filters, survivors, guesses,
  the end-of-flow answer) over a list of payloads and returns its verdict;
* :func:`packets` turns the payloads into real IPv4 packets (a TCP
  handshake first) for the engine, e.g. ``Classifier.classify_flow``;
* :func:`stun_message`, :func:`rpc_call` and :func:`rpc_record` build
  messages more than one test module needs.

Payloads are ``(direction, bytes)`` pairs, direction 0 from the client.
"""

from __future__ import annotations

import struct
from typing import Any, Iterable, Sequence

import dpkt
from dpicore import Flow, Packet, Verdict
from dpicore.decode import Decoder
from dpicore.decode.packets import DLT_RAW
from dpicore.model import ACK, PSH, SYN, TCP, UDP, FlowKey, parse_ip

from .base import Context, Heuristic
from .dispatch import Dispatcher, FlowState
from .protocols import all_heuristics
from .protocols.stun import MAGIC

CLIENT = parse_ip("192.0.2.1")
SERVER = parse_ip("198.51.100.1")
#: The engine keeps this many payloads per flow by default (``engine.max_payloads``).
MAX_PAYLOADS = 8


def make_flow(transport: int = TCP, client_port: int = 49152, server_port: int = 1,
              client: bytes = CLIENT, server: bytes = SERVER) -> Flow:
    """A flow as the flow table would open it for a client at ``client``:``client_port``."""
    a, b = sorted([(client, client_port), (server, server_port)])
    key = FlowKey(transport, 0, a[0], a[1], b[0], b[1])
    return Flow(key=key, client=client, client_port=client_port, server=server, server_port=server_port,
                first_seen=0.0, last_seen=0.0)


def _record(flow: Flow, direction: int, payload: bytes) -> None:
    if len(flow.payloads) < MAX_PAYLOADS:
        flow.payloads.append((direction, payload))


def run_detector(heuristic: Heuristic, payloads: Sequence[tuple[int, bytes]], transport: int = TCP,
                 flow: Flow | None = None, shared: dict[str, Any] | None = None) -> list[Any]:
    """Every result of ``heuristic.detect`` over ``payloads`` (called on each, whatever it said before)."""
    flow = flow or make_flow(transport)
    seen = [0, 0]
    memo: dict[str, Any] = {}
    shared = {} if shared is None else shared
    results = []
    for direction, payload in payloads:
        if not payload:
            continue
        _record(flow, direction, payload)
        seen[direction] += 1
        ctx = Context(flow, transport, direction, payload, seen[direction], shared, memo)
        results.append(heuristic.detect(ctx))
    return results


def classify(payloads: Iterable[tuple[int, bytes]], transport: int = TCP,
             heuristics: Iterable[Heuristic] | None = None, flow: Flow | None = None,
             dispatcher: Dispatcher | None = None) -> Verdict | None:
    """The layer's verdict for a flow carrying ``payloads`` (None: Unknown), as the plugin would give it."""
    dispatcher = dispatcher or Dispatcher(all_heuristics() if heuristics is None else heuristics)
    flow = flow or make_flow(transport)
    state = FlowState()
    for direction, payload in payloads:
        if not payload:
            continue
        _record(flow, direction, payload)
        result = dispatcher.classify(state, (flow, transport, direction, payload))
        if isinstance(result, Verdict):
            return result
        if result is None:
            return state.guess
    return state.guess


def packets(payloads: Iterable[tuple[int, bytes]], transport: int = TCP, client_port: int = 49152,
            server_port: int = 1) -> list[Packet]:
    """Real IPv4 packets carrying ``payloads`` (TCP: after a handshake, with running sequence numbers)."""
    frames: list[bytes] = []
    ends = {0: (CLIENT, client_port), 1: (SERVER, server_port)}
    seq = {0: 1000, 1: 5000}

    def emit(direction: int, l4: dpkt.Packet) -> None:
        (src, _), (dst, _) = ends[direction], ends[1 - direction]
        ip = dpkt.ip.IP(src=src, dst=dst, p=transport, ttl=64, data=l4)
        ip.len = len(ip)
        frames.append(bytes(ip))

    def segment(direction: int, flags: int, data: bytes = b"") -> dpkt.tcp.TCP:
        sport, dport = ends[direction][1], ends[1 - direction][1]
        seg = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq[direction], ack=seq[1 - direction], flags=flags,
                           data=data)
        seq[direction] = (seq[direction] + len(data) + (1 if flags & SYN else 0)) & 0xFFFFFFFF
        return seg

    if transport == TCP:
        emit(0, segment(0, SYN))
        emit(1, segment(1, SYN | ACK))
        emit(0, segment(0, ACK))
    for direction, payload in payloads:
        if transport == TCP:
            emit(direction, segment(direction, PSH | ACK, payload))
        elif transport == UDP:
            sport, dport = ends[direction][1], ends[1 - direction][1]
            udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
            udp.ulen = len(udp)
            emit(direction, udp)
        else:
            emit(direction, payload)  # type: ignore[arg-type]
    decoder = Decoder()
    out = []
    for i, frame in enumerate(frames):
        pkt = decoder.decode(DLT_RAW, frame, i * 0.001, len(frame), i + 1)
        if pkt is not None:
            out.append(pkt)
    return out


def stun_message(mtype: int, attrs: bytes = b"", cookie: int = MAGIC) -> bytes:
    """A STUN message (RFC 8489 §5): type, length, cookie, a fixed transaction ID, then ``attrs``."""
    return struct.pack("!HHI", mtype, len(attrs), cookie) + bytes(range(12)) + attrs


def rpc_call(prog: int = 100003, vers: int = 3, proc: int = 1, xid: int = 0x5E1D0BDC) -> bytes:
    """An ONC RPC call (RFC 5531) with AUTH_UNIX credentials: NFSv3's GETATTR by default."""
    cred = dpkt.rpc.RPC.Auth(flavor=dpkt.rpc.AUTH_UNIX,
                             data=struct.pack("!II", 0x3847760B, 9) + b"werrmsche\x00\x00\x00" +
                             struct.pack("!III", 0, 0, 1) + struct.pack("!I", 5))
    c = dpkt.rpc.RPC.Call(rpcvers=2, prog=prog, vers=vers, proc=proc, cred=cred,
                          verf=dpkt.rpc.RPC.Auth(flavor=dpkt.rpc.AUTH_NONE, data=b""), data=bytes(36))
    return bytes(dpkt.rpc.RPC(xid=xid, dir=dpkt.rpc.CALL, data=c))


def rpc_record(message: bytes, last: bool = True) -> bytes:
    """``message`` as ONC RPC sends it over TCP: behind its record mark (RFC 5531 §11), the last
    fragment's or not."""
    return struct.pack("!I", (0x80000000 if last else 0) | len(message)) + message
