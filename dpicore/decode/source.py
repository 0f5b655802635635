"""A capture file as a stream of packets, with its damage recorded, not raised.

Traffic is hostile input: a garbage frame must cost one counted error, never
the run.  So does a pcapng packet block that is damaged inside a sound block
(a captured length past its end, an interface never described): its block
length still frames it, and the reading goes on after it.  A file that
cannot be read further (cut mid-record, a corrupt record or block length)
ends the stream early; everything decoded before the damage has already been
yielded, and :attr:`CaptureSource.problems` says what happened and where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..model import Packet
from .capture import CaptureError, CaptureReader
from .packets import LINKTYPE_NAMES, DecodeError, Decoder, UnsupportedLinkType

#: Per-file cap on the decode errors described one by one.
MAX_DESCRIBED = 3


class CaptureSource:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.frames = 0
        self.packets = 0
        self.undecodable = 0
        self.unsupported: dict[int, int] = {}
        self.problems: list[str] = []
        #: The file ended early (damage) or could not be opened at all.
        self.damaged = False
        self.fatal: CaptureError | None = None
        self._decoder = Decoder()

    @property
    def non_ip(self) -> int:
        return self._decoder.non_ip

    def __iter__(self) -> Iterator[Packet]:
        decode = self.decode
        try:
            reader = CaptureReader(self.path, self.skipped)
        except CaptureError as exc:
            self._fatal(exc)
            return
        try:
            for number, ts, linktype, data, wire_len in reader:
                self.frames = number
                pkt = decode(linktype, data, ts, wire_len, number)
                if pkt is not None:
                    yield pkt
        except CaptureError as exc:
            self._fatal(exc)
        finally:
            reader.close()
            self._summarise()

    def decode(self, linktype: int, data: bytes, ts: float, wire_len: int, number: int) -> Packet | None:
        """Decode one frame, recording (not raising) what cannot be decoded."""
        try:
            pkt = self._decoder.decode(linktype, data, ts, wire_len, number)
        except DecodeError as exc:
            self.note_error(linktype, number, exc)
            return None
        except Exception as exc:  # a decoder bug a frame runs into costs that frame, not the run
            self.note_error(linktype, number, _failed(exc))
            return None
        if pkt is not None:
            self.packets += 1
        return pkt

    def note_error(self, linktype: int, number: int, exc: DecodeError) -> None:
        if isinstance(exc, UnsupportedLinkType):
            self.unsupported[linktype] = self.unsupported.get(linktype, 0) + 1
            return
        self.undecodable += 1
        if self.undecodable <= MAX_DESCRIBED:
            self.problems.append(f"{self.path}: packet {number}: cannot decode: {exc}")

    def skipped(self, number: int, message: str) -> None:
        """A damaged packet the reader skipped (a pcapng packet block whose block is sound): one
        undecodable packet, as a frame the decoder cannot read."""
        self.note_error(-1, number, DecodeError(message))

    def fail(self, exc: CaptureError) -> None:
        """The file cannot be read further (or at all)."""
        self._fatal(exc)

    def finish(self) -> None:
        """Add the summary lines; call once after the last frame."""
        self._summarise()

    def _fatal(self, exc: CaptureError) -> None:
        self.damaged = True
        self.fatal = exc
        self.problems.append(str(exc))

    def _summarise(self) -> None:
        if self.frames and self.non_ip == self.frames:  # (every -j shard sees every such frame)
            self.problems.append(f"{self.path}: none of its {self.frames} frames is an IP packet (ARP, spanning "
                                 "tree, other EtherTypes or loopback families): no flows")
        if self.undecodable > MAX_DESCRIBED:
            self.problems.append(f"{self.path}: {self.undecodable} packets could not be decoded in all")
        for linktype, count in sorted(self.unsupported.items()):
            name = LINKTYPE_NAMES.get(linktype, "unknown")
            self.problems.append(f"{self.path}: {count} packet{'s' if count != 1 else ''} with unsupported link type "
                                 f"{linktype} ({name}) "
                                 "skipped; supported: " + ", ".join(sorted(set(LINKTYPE_NAMES.values()))))
        if self.unsupported and not self.packets:
            self.damaged = True
        if self.undecodable:
            self.damaged = True


def _failed(exc: Exception) -> DecodeError:
    """A decoder failure that is not a DecodeError, told as one (it is the decoder's fault, not the frame's)."""
    return DecodeError(f"decoder failed ({type(exc).__name__}: {exc})")


def packets_from_pcap(path: str | Path) -> Iterator[Packet]:
    """Decoded packets of a capture; damage ends the stream silently (use CaptureSource to see it)."""
    return iter(CaptureSource(path))
