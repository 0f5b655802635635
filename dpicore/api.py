"""The Python API, in go-dpi's spirit.

::

    from dpicore import Classifier

    with Classifier() as dpi:
        for flow in dpi.classify_pcap("capture.pcap"):
            print(flow.verdict.protocol if flow.verdict else "Unknown")
        verdict = dpi.classify_payload(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")

A :class:`Classifier` owns one engine (one nDPI module, one flow table), so
use one per thread or process.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import attrs

from .config import Config
from .decode import CaptureSource, Decoder
from .decode.packets import DLT_RAW
from .decode.walks import SharedWalks
from .engine import Engine
from .fastpath import classify_batched
from .model import ACK, PSH, SYN, TCP, UDP, Flow, FlowKey, Packet, Verdict, parse_ip
from .plugins import PluginSet, discover
from .protocols import UNKNOWN

#: Documentation addresses (RFC 5737) for synthetic first-payload flows.
CLIENT_IP = "192.0.2.1"
SERVER_IP = "198.51.100.1"
DEFAULT_CLIENT_PORT = 49152
DEFAULT_SERVER_PORT = 1

_TRANSPORTS = {"tcp": TCP, "udp": UDP}
#: What one IPv4 packet of classify_payload carries after its 20-byte IP and TCP (20) or UDP (8) header.
MAX_PAYLOAD = {TCP: 0xFFFF - 40, UDP: 0xFFFF - 28}


def freeze_startup() -> None:
    """Keep every object alive now out of Python's cyclic garbage collection for the rest of the process
    (:func:`gc.freeze`): for a process that builds its Classifier once and then classifies.

    A run allocates flows, packets and verdicts by the million, which triggers collections, and each
    full one walked the start-up's objects as well: the modules, numpy, the plugins' tables and
    patterns, ~100 k objects alive until the process ends.  ``dpi classify`` calls this once its layers
    are loaded, and each ``-j`` worker once its own are (a forked worker then also leaves the pages of
    the objects it shares with its parent unwritten by the collector).  Frozen objects are never
    collected, so a program that builds classifiers over and over should not call it after each.
    """
    gc.freeze()


def flow_from_packet(pkt: Packet) -> Flow:
    """A new flow holding ``pkt`` as its first packet (the sender is the client), as go-dpi's GetPacketFlow
    makes one: its counters count that packet."""
    return Flow(FlowKey.of(pkt), pkt.src, pkt.sport, pkt.ts, pkt.ts, pkt.number, c2s_packets=1, c2s_bytes=pkt.wire_len)


class Classifier:
    """Discover the installed layers once; classify captures, packet lists, flows or single payloads."""

    def __init__(self, config: Config | None = None, layers: Iterable[str] | None = None,
                 all_layers: bool | None = None, plugins: PluginSet | None = None,
                 extra_plugins: Iterable[tuple[str, object]] = ()) -> None:
        if config is not None and not isinstance(config, Config):
            raise TypeError(f"config must be a dpicore.config.Config, not {type(config).__name__} "
                            "(dpicore.config.config_from_dict reads a dict, load_config a TOML file)")
        config = config or Config()
        if isinstance(layers, str):  # "ndpi" or "heuristics,ndpi", as -l takes them; not its letters
            layers = [x.strip() for x in layers.split(",") if x.strip()]
        if layers is not None:
            layers = list(layers)
            if not all(isinstance(x, str) for x in layers):  # b"ndpi" named layers 110, 100, …
                raise TypeError(f"layers must be layer ids (str), not {layers!r}")
            config = config.with_layers(layers)
        if all_layers is not None:
            config = attrs.evolve(config, all_layers=all_layers)  # the caller's Config stays as it was
        self.config = config
        self.plugins = plugins or discover(config, extra=extra_plugins)
        self.engine = Engine(self.plugins, config)
        #: The last capture read by :meth:`classify_pcap` (for its damage report).
        self.last_source: CaptureSource | None = None
        #: The last live source opened by :meth:`classify_live` (for its counters).
        self.last_live: Any = None
        self._closed = False
        #: A capture or packet stream is being read (its flows share the engine's table).
        self._streaming = False

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Classifier is closed (its layers have released their libraries and "
                               "models); make a new one")

    @property
    def layers(self) -> list[str]:
        return [layer.id for layer in self.engine.layers]

    def _check_free(self) -> None:
        if self._streaming:
            raise RuntimeError("this Classifier is already reading a capture or packet stream: finish or "
                               "close that iteration first, or use another Classifier")

    def _stream(self, flows: Iterator[Flow]) -> Iterator[Flow]:
        """``flows`` of one capture or packet stream, on the engine's flow table.

        One at a time: two captures read in turns would share the table, each one's flows ending the
        other's.  A stream left before its end (``break``; the generator closed or collected) must not
        leave its live flows for the next call to report: they are ended there, unreported (their
        layers release what they hold).  And a Classifier closed meanwhile has no layers left: the
        stream stops instead of yielding flows without verdicts.
        """
        self._check_open()
        self._check_free()
        self._discard_leftovers()  # of a stream an exception ended (Ctrl-C: the caller counted them)
        self._streaming = True
        try:
            for flow in flows:
                yield flow
                if self._closed:
                    raise RuntimeError("this Classifier was closed while its flows were being read")
        except GeneratorExit:  # left before its end
            if hasattr(flows, "close"):
                flows.close()
            self._discard_leftovers()
            raise
        finally:
            self._streaming = False

    def _discard_leftovers(self) -> None:
        # Even with no flow left: the table's clock (its horizon, closed flows waiting) must start again.
        if not self._closed:
            for _ in self.engine.drained():
                pass

    def classify_pcap(self, path: str | Path, batched: bool = True,
                      shard: tuple[int, int] | None = None, walks: SharedWalks | None = None) -> Iterator[Flow]:
        """Every flow of a capture, yielded as it ends (streamed: memory follows live flows only; the
        batch path yields the flows a batch of packets ended once that batch is done).

        ``batched`` uses the numpy batch path (:mod:`dpicore.fastpath`); False
        feeds packet by packet (the reference the batch path is tested
        against).  ``shard=(i, n)`` keeps only flows whose key hashes to i
        modulo n, for splitting one file over n processes (``walks``: the
        record walks they share, see :mod:`dpicore.decode.walks`).  A file that cannot
        be read (missing, damaged, not a capture) is not an exception: the
        flows before the damage are yielded and :attr:`last_source` says what
        happened (``problems``, ``damaged``), as ``dpi classify`` reports it.
        """
        self._check_open()
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or a path, not {type(path).__name__}")
        if shard is not None and not (isinstance(shard, tuple) and len(shard) == 2
                                      and all(type(x) is int for x in shard) and 0 <= shard[0] < shard[1]):
            raise ValueError(f"shard must be (i, n) with ints 0 <= i < n, not {shard!r}")
        source = CaptureSource(path)
        self.last_source = source
        if batched or shard is not None:
            yield from self._stream(classify_batched(self.engine, source, shard, walks))
        else:
            yield from self._stream(self.engine.run(source))

    def classify_live(self, interface: str, bpf: str | None = None, duration: float | None = None,
                      write_pcap: str | None = None, close_timeout: float = 0.5,
                      on_ready: Callable[[Any], None] | None = None,
                      on_tick: Callable[[], None] | None = None) -> Iterator[Flow]:
        """Flows of a live interface, each yielded when it ends.

        Stops after ``duration`` seconds or on Ctrl-C; either way every open
        flow is then ended and yielded.  A closed TCP connection is reported
        ``close_timeout`` seconds after its last FIN/RST.  ``on_tick`` is called
        at each of the source's clock ticks (about a second apart, with or
        without traffic), for periodic summaries.  Raises
        :class:`dpicore.live.LiveCaptureError` when the interface cannot be
        opened (no such interface, no permission, bad filter).
        """
        from .live import LiveSource

        self._check_open()
        self._check_free()  # before the interface is opened
        source = LiveSource(interface, bpf=bpf, duration=duration, write_pcap=write_pcap)
        self.last_live = source
        table = self.engine.table
        kept, table.close_timeout = table.close_timeout, close_timeout  # the capture files' own comes back
        try:
            yield from self._stream(self._live(source, on_ready, on_tick))
        finally:
            table.close_timeout = kept

    def _live(self, source: Any, on_ready: Callable[[Any], None] | None,
              on_tick: Callable[[], None] | None) -> Iterator[Flow]:
        engine = self.engine
        feed, tick = engine.feed, engine.tick
        try:
            if on_ready is not None:  # inside the try: a callback that raises still closes the capture
                on_ready(source)
            for pkt in source:
                if pkt is None:
                    ended = tick(time.time())
                    if on_tick is not None:
                        on_tick()
                else:
                    ended = feed(pkt)
                if ended:
                    yield from ended
        except KeyboardInterrupt:
            source.interrupted = True
        finally:
            source.close()
        yield from engine.drained()

    def classify_packets(self, packets: Iterable[Packet]) -> Iterator[Flow]:
        yield from self._stream(self.engine.run(packets))

    def classify_flow(self, packets: Iterable[Packet]) -> Flow:
        """Classify packets that form one flow; returns that flow with its verdict(s).  Runs on a flow
        table of its own, so it may be called while a capture's flows are being read."""
        self._check_open()
        with self.engine.apart():
            flows = list(self.engine.run(packets))
        if len(flows) != 1:
            raise ValueError(f"the packets form {len(flows)} flows, not one")
        return flows[0]

    def classify_payload(self, payload: bytes, transport: str = "tcp", src_port: int | None = None,
                         dst_port: int | None = None, from_server: bool = False) -> Verdict:
        """Name the protocol of one connection's first payload (what a honeypot needs).

        ``from_server`` says the payload is the server's greeting (FTP, SMTP,
        SSH, MySQL, …), for protocols where the server speaks first.  Ports
        are optional; structure decides, ports only break ties.
        """
        self._check_open()
        proto = _TRANSPORTS.get(transport.lower()) if isinstance(transport, str) else None
        if proto is None:
            raise ValueError(f"transport must be 'tcp' or 'udp', not {transport!r}")
        sport = DEFAULT_CLIENT_PORT if src_port is None else src_port
        dport = DEFAULT_SERVER_PORT if dst_port is None else dst_port
        packets = synthetic_packets(payload, proto, sport, dport, from_server)
        flow = self.classify_flow(packets)
        return flow.verdict or Verdict(UNKNOWN, source="", confidence=0.0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.engine.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def synthetic_packets(payload: bytes, proto: int, sport: int, dport: int, from_server: bool) -> list[Packet]:
    """Real IPv4 packets around one payload: a TCP handshake first, so layers that
    track TCP state (nDPI) see what they would on the wire.  ``proto`` is TCP (6) or UDP
    (17); the payload any bytes-like object that fits one packet; ports ints in 0..65535."""
    import dpkt  # here, not at the top: importing it is a sixth of every `dpi` start, and only this needs it

    if proto not in MAX_PAYLOAD or type(proto) is bool:  # "tcp" or 132 built a UDP packet
        raise ValueError(f"proto must be TCP ({TCP}) or UDP ({UDP}), not {proto!r}")
    if type(payload) is not bytes:
        try:  # any buffer (bytearray, memoryview of any format, array, mmap) by its bytes, not its items
            payload = memoryview(payload).tobytes()
        except TypeError:
            raise TypeError(f"payload must be bytes-like, not {type(payload).__name__}") from None
    room = MAX_PAYLOAD[proto]
    if len(payload) > room:
        raise ValueError(f"a {'TCP' if proto == TCP else 'UDP'} payload in one IPv4 packet holds at most {room} "
                         f"bytes, not {len(payload)}")
    for name, port in (("src_port", sport), ("dst_port", dport)):
        if type(port) is not int or not 0 <= port <= 0xFFFF:
            raise ValueError(f"{name} must be an int in 0..65535, not {port!r}")
    if type(from_server) is not bool:  # "no" would be true
        raise ValueError(f"from_server must be True or False, not {from_server!r}")

    client, server = bytes(parse_ip(CLIENT_IP)), bytes(parse_ip(SERVER_IP))
    decoder = Decoder()
    frames: list[bytes] = []

    def ip_packet(src: bytes, dst: bytes, l4: "dpkt.Packet", p: int) -> bytes:
        ip = dpkt.ip.IP(src=src, dst=dst, p=p, ttl=64, data=l4)
        ip.len = len(ip)  # dpkt fills checksums and length on bytes()
        return bytes(ip)

    if proto == TCP:
        cseq, sseq = 1000, 5000
        frames.append(ip_packet(client, server, dpkt.tcp.TCP(sport=sport, dport=dport, seq=cseq, flags=SYN), TCP))
        frames.append(ip_packet(server, client, dpkt.tcp.TCP(sport=dport, dport=sport, seq=sseq, ack=cseq + 1,
                                                             flags=SYN | ACK), TCP))
        frames.append(ip_packet(client, server, dpkt.tcp.TCP(sport=sport, dport=dport, seq=cseq + 1,
                                                             ack=sseq + 1, flags=ACK), TCP))
        if from_server:
            seg = dpkt.tcp.TCP(sport=dport, dport=sport, seq=sseq + 1, ack=cseq + 1, flags=PSH | ACK, data=payload)
            frames.append(ip_packet(server, client, seg, TCP))
        else:
            seg = dpkt.tcp.TCP(sport=sport, dport=dport, seq=cseq + 1, ack=sseq + 1, flags=PSH | ACK, data=payload)
            frames.append(ip_packet(client, server, seg, TCP))
    else:
        src, dst, sp, dp = (server, client, dport, sport) if from_server else (client, server, sport, dport)
        udp = dpkt.udp.UDP(sport=sp, dport=dp, data=payload)
        udp.ulen = len(udp)
        frames.append(ip_packet(src, dst, udp, UDP))
    packets = []
    for i, frame in enumerate(frames):
        pkt = decoder.decode(DLT_RAW, frame, float(i) * 0.001, len(frame), i + 1)
        assert pkt is not None
        packets.append(pkt)
    return packets
