"""A complete third-party dpicore layer: Gopher (RFC 1436).

A Gopher client opens the connection and sends one selector line ending in
CRLF, optionally followed by a TAB and a search string.  Nothing else in the
protocol is structured, so the test is strict about the line to avoid
claiming other line-based protocols: printable, no spaces before a TAB, and
not a command word of a better-known protocol.
"""

from __future__ import annotations

from typing import Any

from dpicore import LayerInfo, ProtocolSpec, Verdict, hookimpl

LAYER = "gopher"
MAX_SELECTOR = 255
_OTHER_COMMANDS = (b"GET", b"POST", b"HEAD", b"USER", b"EHLO", b"HELO", b"NICK", b"CAP", b"OPTIONS")


def selector(line: bytes, max_selector: int = MAX_SELECTOR) -> str | None:
    """The selector of a Gopher request line, or None when the line is not one."""
    sel = line.split(b"\t", 1)[0]
    if len(sel) > max_selector or b" " in sel or sel.upper().startswith(_OTHER_COMMANDS):
        return None
    if any(c < 0x20 or c > 0x7E for c in line if c != 0x09):
        return None
    return sel.decode("ascii")


class GopherLayer:
    """The layer; the entry point names this class.

    dpicore makes one instance per plugin manager (per ``Classifier``), so
    settings live on ``self``: two classifiers in one process may configure
    the layer differently.  Keep module globals for constants only.
    """

    def __init__(self) -> None:
        self.max_selector = MAX_SELECTOR

    @hookimpl
    def dpi_layer_info(self) -> LayerInfo:
        return LayerInfo(id=LAYER, priority=15, protocols=("Gopher",), max_packets=2, reads_payloads=False,
                         description="Gopher selector lines (example plugin)")

    @hookimpl
    def dpi_configure(self, config: dict[str, Any]) -> None:
        """``[layers.gopher] max_selector = N`` bounds the selector length (default 255)."""
        value = config.get("max_selector", MAX_SELECTOR)
        if not isinstance(value, int) or value < 1:
            raise ValueError("layers.gopher.max_selector must be a positive integer")
        self.max_selector = value

    @hookimpl
    def dpi_unconfigure(self) -> None:
        """Nothing to release here; a layer holding a library or a file closes it in this hook."""

    @hookimpl
    def dpi_register_protocols(self) -> list[ProtocolSpec]:
        return [ProtocolSpec("Gopher", aliases=("Gopher+",))]

    @hookimpl
    def dpi_flow_new(self, flow: Any, packet: Any) -> bytearray:
        return bytearray()

    @hookimpl
    def dpi_classify(self, flow: Any, packet: Any, direction: int, state: bytearray) -> Verdict | None:
        if direction != 0:  # the server never speaks first in Gopher
            return Verdict("Unknown", confidence=0.0)
        state.extend(packet.payload)
        end = state.find(b"\r\n")
        if end < 0:
            return None if len(state) <= self.max_selector else Verdict("Unknown", confidence=0.0)
        if end + 2 != len(state):  # a request is exactly one line
            return Verdict("Unknown", confidence=0.0)
        sel = selector(bytes(state[:end]), self.max_selector)
        if sel is None:
            return Verdict("Unknown", confidence=0.0)
        return Verdict("Gopher", confidence=0.6, metadata={"selector": sel})

    @hookimpl
    def dpi_flow_end(self, flow: Any, state: bytearray, reason: str) -> None:
        state.clear()
