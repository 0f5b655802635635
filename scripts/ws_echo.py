"""WebSocket echo server and client (the `websockets` library) for scripts/make_captures.py.

``ws_echo.py serve PORT`` echoes every message on 127.0.0.1:PORT;
``ws_echo.py send PORT`` opens ws://127.0.0.1:PORT/chat, sends two messages
and prints the echoes.
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


async def _echo(ws) -> None:  # type: ignore[no-untyped-def]
    async for message in ws:
        await ws.send(f"echo: {message}")


async def _serve(port: int) -> None:
    async with serve(_echo, "127.0.0.1", port, compression=None):
        await asyncio.get_running_loop().create_future()


async def _send(port: int) -> None:
    async with connect(f"ws://127.0.0.1:{port}/chat", compression=None) as ws:
        for text in ("hello", "dpicore websocket capture"):
            await ws.send(text)
            print(await ws.recv())


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    asyncio.run(_serve(port) if mode == "serve" else _send(port))


if __name__ == "__main__":
    main()
