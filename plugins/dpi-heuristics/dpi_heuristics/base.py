"""What a heuristic is, and what it is given.

A heuristic is one protocol's structural test.  It declares the transports
it applies to and, where it can, the bytes a first payload may start with;
the dispatcher uses both so a flow only runs the heuristics that could match
(nDPI's habit: dissectors register what they care about).

A detector returns:

- a :class:`dpicore.Verdict` (use :func:`found`): the protocol is identified;
- :data:`MORE`: plausible so far, show me the next payload packet;
- ``None``: not this protocol; the dispatcher drops it for this flow.

A detector that is fairly sure from one packet but wants a second to be
certain returns ``ctx.guess(verdict)``: that is :data:`MORE`, and the guess
becomes the verdict if the flow ends first (returning None later takes the
guess back: the next packet contradicted it).  Per-flow state between packets
goes in ``ctx.memo`` (a dict per flow, keyed by protocol name).

A detector must never raise, whatever the payload: truncated, malformed and
hostile input is the normal case.  (The dispatcher drops a heuristic that
raises anyway, and records it on the flow, as a last resort.)

Detectors decide from payload structure, never from ports.  Ports may only
break a tie between two structurally valid readings, and then the verdict
says so (``metadata["port_hint"] = True``) with a lower confidence.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

import attrs
from dpicore import Flow, Verdict
from dpicore.model import TCP, UDP

LAYER_ID = "heuristics"

#: Keep this heuristic alive: the payload so far fits, more is needed.
MORE: Any = object()

#: Confidence levels the heuristics use.
CERTAIN = 0.95   # magic numbers / exact structure (TLS record + handshake, SSH banner)
STRONG = 0.85    # clear structure with few false positives
LIKELY = 0.7     # plausible structure, some risk
PORT_TIE = 0.55  # structure fits several readings, a port broke the tie

ANY_BYTE: frozenset[int] | None = None


class Context:
    """One payload packet, as a detector sees it.

    A plain ``__slots__`` class rather than an attrs one: the dispatcher makes
    one per payload packet, so its constructor is on the hot path.
    """

    __slots__ = ("flow", "transport", "direction", "payload", "index", "shared", "memo", "tentative")

    def __init__(self, flow: Flow, transport: int, direction: int, payload: bytes, index: int,
                 shared: dict[str, Any], memo: dict[str, Any] | None = None,
                 tentative: "Verdict | None" = None) -> None:
        self.flow = flow
        self.transport = transport
        #: 0: client to server, 1: server to client.
        self.direction = direction
        #: This packet's payload.
        self.payload = payload
        #: 1-based count of payload packets seen in this direction, this one included.
        self.index = index
        #: Layer-wide shared state (e.g. FTP data connections announced on control flows).
        self.shared = shared
        #: This flow's scratch space for detectors that keep state between packets
        #: (QUIC CRYPTO reassembly, RTP sequence numbers).  Key it by protocol name.
        self.memo: dict[str, Any] = {} if memo is None else memo
        #: Set through :meth:`guess`; read by the dispatcher.
        self.tentative = tentative

    def __repr__(self) -> str:
        return (f"Context(transport={self.transport}, direction={self.direction}, index={self.index}, "
                f"payload={self.payload[:32]!r})")

    @property
    def from_client(self) -> bool:
        return self.direction == 0

    @property
    def stream(self) -> bytes:
        """Every payload byte of this direction so far (bounded by the engine), for split heads."""
        return self.flow.stream(self.direction)

    def first(self, direction: int) -> bytes | None:
        return self.flow.first_payload(direction)

    def guess(self, verdict: Verdict) -> Any:
        """Offer ``verdict`` in case the flow ends before this detector can be sure; returns :data:`MORE`.

        For protocols that need a second packet to be certain (RTP, a SOCKS5
        greeting, a QUIC version-negotiation probe): when the flow ends, or
        every other candidate gives up, the best standing guess becomes the
        layer's verdict, so a single first payload (a honeypot's) still gets
        an answer, at the guess's lower confidence.  A later None from the
        same detector withdraws its guess.
        """
        if self.tentative is None or verdict.confidence > self.tentative.confidence:
            self.tentative = verdict
        return MORE

    @property
    def server_port(self) -> int:
        """Only for tie-breaking, see the module docstring."""
        return self.flow.server_port

    @property
    def client_port(self) -> int:
        return self.flow.client_port


Detector = Callable[[Context], "Verdict | None | Any"]


@attrs.define(slots=True, frozen=True)
class Heuristic:
    """One protocol's test, with the pre-filters that decide when it runs."""

    #: Canonical protocol name; also the key users write to select or block it.
    name: str
    detect: Detector
    transports: frozenset[int] = frozenset({TCP})
    #: First byte of the flow's first payload must be one of these (None: any).
    first_bytes: frozenset[int] | None = None
    #: Can decide from the server's first payload (server-speaks-first protocols).
    server_first: bool = False
    #: Can decide from the client's first payload alone.
    client_first: bool = True
    #: Lower runs earlier among candidates: specific magic before loose text tests.
    order: int = 50
    #: Other protocol names this heuristic can return (e.g. FTP also names FTP_DATA).
    also: tuple[str, ...] = ()


def starts(*prefixes: bytes | str) -> frozenset[int]:
    """First-byte pre-filter from the prefixes a protocol's first payload may have."""
    out: set[int] = set()
    for p in prefixes:
        b = p.encode() if isinstance(p, str) else p
        if b:
            out.add(b[0])
            if isinstance(p, str) and b[:1].isalpha():  # text protocols: accept either case
                out.add(b[:1].lower()[0])
                out.add(b[:1].upper()[0])
    return frozenset(out)


def found(protocol: str, confidence: float = STRONG, watch: int = 0, app: str | None = None,
          watch_for: re.Pattern[bytes] | None = None, **metadata: Any) -> Verdict:
    """A verdict from this layer; metadata with None values is left out."""
    # Positional (protocol, source, confidence, app, category, metadata, watch, watch_for): by keywords
    # CPython matched each against the attrs __init__'s parameters, once for every flow a heuristic names.
    return Verdict(protocol, LAYER_ID, confidence, app, None,
                   {k: v for k, v in metadata.items() if v is not None}, watch, watch_for)


def text(data: bytes, limit: int = 256) -> str:
    """Printable ASCII prefix (banners, hosts) for metadata."""
    return data[:limit].decode("latin-1").split("\r", 1)[0].split("\n", 1)[0].strip()


TCP_ONLY = frozenset({TCP})
UDP_ONLY = frozenset({UDP})
TCP_UDP = frozenset({TCP, UDP})


def heuristics_of(items: Iterable[Heuristic]) -> list[Heuristic]:
    return list(items)
