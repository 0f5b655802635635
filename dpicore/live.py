"""Live capture through libpcap (pcapy-ng), as a stream of packets and clock ticks.

A quiet interface delivers no packets, yet flows must still end on time
(idle timeouts, closed connections), so the source yields ``None`` every
``tick`` seconds and the caller lets the engine expire flows by the wall
clock.  libpcap's own read timeout does not fire on Linux when nothing
arrives, so the handle is non-blocking and waited on with ``select``.
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any, Iterator

from .decode.packets import DecodeError, Decoder, UnsupportedLinkType
from .model import Packet

log = logging.getLogger(__name__)


class LiveCaptureError(Exception):
    """The interface cannot be captured on; the message says why and what to do."""


def _pcapy() -> Any:
    try:
        import pcapy  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - the dependency is declared
        raise LiveCaptureError("live capture needs pcapy-ng: pip install pcapy-ng") from exc
    return pcapy


def interfaces() -> list[str]:
    """Interfaces libpcap can open."""
    return list(_pcapy().findalldevs())


class LiveSource:
    """Packets from a network interface.

    Iterating yields :class:`~dpicore.model.Packet` objects, and ``None``
    whenever ``tick`` seconds pass (so flows can be expired by the clock).
    ``duration`` stops the capture after that many seconds; ``write_pcap``
    keeps every captured frame in a pcap file.
    """

    def __init__(self, interface: str, bpf: str | None = None, duration: float | None = None,
                 write_pcap: str | None = None, snaplen: int = 65535, promiscuous: bool = False,
                 tick: float = 0.2) -> None:
        pcapy = _pcapy()
        self.interface = interface
        self.duration = duration
        self.tick = tick
        self.frames = 0
        self.packets = 0
        self.undecodable = 0
        #: Frames the kernel dropped because we read too slowly (libpcap's ps_drop + ps_ifdrop): a
        #: capture that lost frames gives fewer and shorter flows, and the reader has to know.  Read
        #: at each clock tick and when the capture closes; None where the interface cannot say.
        self.dropped: int | None = 0
        try:
            self._handle = pcapy.open_live(interface, snaplen, promiscuous, 100)
        except pcapy.PcapError as exc:
            raise LiveCaptureError(_explain(interface, str(exc))) from None
        if bpf:
            try:
                self._handle.setfilter(bpf)
            except pcapy.PcapError as exc:
                raise LiveCaptureError(f"invalid capture filter {bpf!r}: {exc}") from None
        self.linktype = self._handle.datalink()
        self._handle.setnonblock(1)
        try:
            self._dumper = self._handle.dump_open(write_pcap) if write_pcap else None
        except pcapy.PcapError as exc:
            raise LiveCaptureError(f"{write_pcap}: cannot write the capture: {exc}") from None
        self._decoder = Decoder()
        self._stopped = False
        self._closed = False
        #: Set when the capture ended on Ctrl-C.
        self.interrupted = False

    def stop(self) -> None:
        self._stopped = True

    @property
    def closed(self) -> bool:
        """The capture is over (its open flows are then being ended and written)."""
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._read_drops()
        self._dumper = None  # pcapy flushes and closes the dump file when the object goes
        self._handle.close()

    def __iter__(self) -> Iterator[Packet | None]:
        handle = self._handle
        decode = self._decoder.decode
        fd = handle.getfd()
        start = time.time()
        next_tick = start + self.tick
        while not self._stopped:
            now = time.time()
            if self.duration is not None and now - start >= self.duration:
                return
            wait = max(0.0, next_tick - now)
            ready, _, _ = select.select([fd], [], [], wait)
            if ready:
                while True:
                    header, data = handle.next()
                    if header is None:
                        break
                    self.frames += 1
                    if self._dumper is not None:
                        self._dumper.dump(header, data)
                    sec, usec = header.getts()
                    try:
                        pkt = decode(self.linktype, data, sec + usec * 1e-6, header.getlen(), self.frames)
                    except UnsupportedLinkType as exc:
                        raise LiveCaptureError(f"{self.interface}: {exc}") from None
                    except DecodeError:
                        self.undecodable += 1
                        continue
                    except Exception as exc:  # a decoder bug a frame runs into costs that frame, not the capture
                        log.warning("%s: frame %d: decoder failed (%s: %s)", self.interface, self.frames,
                                    type(exc).__name__, exc)
                        self.undecodable += 1
                        continue
                    if pkt is not None:
                        self.packets += 1
                        yield pkt
            if time.time() >= next_tick:
                next_tick = time.time() + self.tick
                self._read_drops()
                yield None

    def _read_drops(self) -> None:
        if self.dropped is None:
            return
        try:
            _received, dropped, if_dropped = self._handle.stats()
        except Exception:  # pcapy.PcapError: this kind of interface keeps no statistics
            self.dropped = None
            return
        self.dropped = dropped + if_dropped


def _explain(interface: str, message: str) -> str:
    low = message.lower()
    if "no such device" in low:
        try:
            known = ", ".join(interfaces())
        except Exception:
            known = "?"
        return f"{interface}: no such interface (available: {known})"
    if "permitted" in low or "permission" in low:
        return (f"{interface}: no permission to capture ({message}); run as root or give the Python "
                "interpreter CAP_NET_RAW and CAP_NET_ADMIN (setcap cap_net_raw,cap_net_admin=eip ...)")
    return f"{interface}: cannot capture: {message}"
