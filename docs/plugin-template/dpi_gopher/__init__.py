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


@hookimpl
def dpi_layer_info() -> LayerInfo:
    return LayerInfo(id=LAYER, priority=15, protocols=("Gopher",), max_packets=2,
                     description="Gopher selector lines (example plugin)")


@hookimpl
def dpi_configure(config: dict[str, Any]) -> None:
    """``[layers.gopher] max_selector = N`` bounds the selector length (default 255)."""
    global MAX_SELECTOR
    value = config.get("max_selector", 255)
    if not isinstance(value, int) or value < 1:
        raise ValueError("layers.gopher.max_selector must be a positive integer")
    MAX_SELECTOR = value


@hookimpl
def dpi_unconfigure() -> None:
    global MAX_SELECTOR
    MAX_SELECTOR = 255


@hookimpl
def dpi_register_protocols() -> list[ProtocolSpec]:
    return [ProtocolSpec("Gopher", aliases=("Gopher+",))]


@hookimpl
def dpi_flow_new(flow: Any, packet: Any) -> bytearray:
    return bytearray()


def selector(line: bytes) -> str | None:
    """The selector of a Gopher request line, or None when the line is not one."""
    sel = line.split(b"\t", 1)[0]
    if len(sel) > MAX_SELECTOR or b" " in sel or sel.upper().startswith(_OTHER_COMMANDS):
        return None
    if any(c < 0x20 or c > 0x7E for c in line if c != 0x09):
        return None
    return sel.decode("ascii")


@hookimpl
def dpi_classify(flow: Any, packet: Any, direction: int, state: bytearray) -> Verdict | None:
    if direction != 0:  # the server never speaks first in Gopher
        return Verdict("Unknown", confidence=0.0)
    state.extend(packet.payload)
    end = state.find(b"\r\n")
    if end < 0:
        return None if len(state) <= MAX_SELECTOR else Verdict("Unknown", confidence=0.0)
    if end + 2 != len(state):  # a request is exactly one line
        return Verdict("Unknown", confidence=0.0)
    sel = selector(bytes(state[:end]))
    if sel is None:
        return Verdict("Unknown", confidence=0.0)
    return Verdict("Gopher", confidence=0.6, metadata={"selector": sel})


@hookimpl
def dpi_flow_end(flow: Any, state: bytearray, reason: str) -> None:
    state.clear()
