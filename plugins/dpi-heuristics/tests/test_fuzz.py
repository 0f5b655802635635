"""No payload makes a detector raise: random bytes, truncations and mutations of valid payloads, on both
directions and both transports, for every heuristic ``all_heuristics()`` returns.

Detectors are called directly (``testing.run_detector``), not through the
dispatcher, whose last-resort ``except`` would hide the exception.  Valid
examples come from the project's real-client captures (tests/captures, made
by scripts/make_captures.py) plus hand-built datagrams of UDP protocols.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from pathlib import Path

import pytest
from dpicore.decode import CaptureSource
from dpicore.model import TCP, UDP, FlowKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpi_heuristics.base import Heuristic
from dpi_heuristics.protocols import all_heuristics
from dpi_heuristics.testing import run_detector

ROOT = Path(__file__).resolve().parents[3]
CAPTURES = sorted((ROOT / "tests" / "captures" / "realclients").glob("*.pcap"))
DATA = Path(__file__).parent / "data"
HEURISTICS = {f"{h.name}#{i}": h for i, h in enumerate(all_heuristics())}


def _flows_from_captures() -> list[tuple[int, list[tuple[int, bytes]]]]:
    """(transport, the first payloads with their directions) of every flow of the real-client captures."""
    flows: OrderedDict[FlowKey, tuple[int, tuple[bytes, int], list[tuple[int, bytes]]]] = OrderedDict()
    for path in CAPTURES:
        for p in CaptureSource(path):
            key = FlowKey.of(p)
            if key not in flows:
                flows[key] = (p.proto, (p.src, p.sport), [])
            proto, client, payloads = flows[key]
            if p.payload and len(payloads) < 6:
                payloads.append((0 if (p.src, p.sport) == client else 1, bytes(p.payload)))
    # One flow per kind of opening (transport, first direction, first bytes): the captures repeat themselves.
    kinds: dict[tuple[int, int, bytes], list[tuple[int, bytes]]] = {}
    for proto, _, payloads in flows.values():
        if payloads:
            kinds.setdefault((proto, payloads[0][0], payloads[0][1][:3]), payloads)
    return [(kind[0], payloads) for kind, payloads in kinds.items()]


def _datagrams() -> list[tuple[int, list[tuple[int, bytes]]]]:
    quic = [bytes.fromhex("".join(l for l in (DATA / n).read_text().splitlines() if not l.startswith("#")))
            for n in ("rfc9001_a2_client_initial.hex", "rfc9369_a2_client_initial.hex")]
    ike = bytes(8) + bytes(8) + bytes([33, 0x20, 34, 8]) + struct.pack("!II", 0, 68) + bytes(40)
    ike = b"\x01" + ike[1:]
    rtp = [struct.pack("!BBHII", 0x80, 0, n, 160 * n, 7) + bytes(160) for n in (1, 2)]
    return [
        (UDP, [(0, quic[0])]), (UDP, [(0, quic[1])]),
        (UDP, [(0, b"\x01\x00\x00\x00" + bytes(144)), (1, b"\x02\x00\x00\x00" + bytes(88))]),
        (UDP, [(0, b"\x38" + bytes(range(8)) + bytes(5)), (1, b"\x40" + bytes(8) + b"\x01" + bytes(16))]),
        (UDP, [(0, ike), (0, b"\x00\x00\x00\x00" + ike)]),
        (UDP, [(0, rtp[0]), (0, rtp[1])]),
        (UDP, [(0, struct.pack("!BBH", 0x80, 200, 6) + bytes(24))]),
        (UDP, [(0, struct.pack("!HHI", 1, 8, 0x2112A442) + bytes(12) + struct.pack("!HH", 0x8022, 3) + b"x\0\0\0")]),
        (UDP, [(0, b"d1:ad2:id20:" + bytes(20) + b"e1:q4:ping1:t2:aa1:y1:qe")]),
        (UDP, [(0, b"\x16\xfe\xff" + bytes(8) + b"\x00\x0c\x01" + bytes(11))]),
        (TCP, [(0, b"\x13BitTorrent protocol" + bytes(48)), (0, b"\x05\x01\x00"), (1, b"\x05\x00")]),
        (TCP, [(0, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), (1, b"\x81\x05hello")]),
    ]


EXAMPLES = _flows_from_captures() + _datagrams()
PAYLOADS = sorted({data for _, flow in EXAMPLES for _, data in flow}, key=len)


def _cuts(n: int) -> list[int]:
    return sorted(set(range(min(n, 24))) | set(range(24, n, max(1, n // 8))) | {max(n - 1, 0)})


def _transports(h: Heuristic) -> list[int]:
    """The heuristic's own transports, and TCP and UDP whatever it declares (the dispatcher would not
    mix them up, but a detector must not depend on that for its safety)."""
    return sorted(set(h.transports) | {TCP, UDP})


def test_examples_cover_the_transports() -> None:
    assert len(CAPTURES) >= 15 and sum(t == TCP for t, _ in EXAMPLES) >= 15
    assert sum(t == UDP for t, _ in EXAMPLES) >= 10


@pytest.mark.parametrize("key", sorted(HEURISTICS))
def test_truncated_examples(key: str) -> None:
    """Every example flow cut short at many points, and its first payload cut and split in two."""
    h = HEURISTICS[key]
    for transport in _transports(h):
        for _, flow in EXAMPLES:
            for i, (direction, data) in enumerate(flow):
                for cut in _cuts(len(data)):
                    run_detector(h, flow[:i] + [(direction, data[:cut])], transport)
                    run_detector(h, [(1 - direction, data[:cut]), (1 - direction, data[cut:])], transport)


def _mutated(data: bytes, positions: list[int], values: list[int], tail: bytes) -> bytes:
    out = bytearray(data)
    for pos, value in zip(positions, values):
        if out:
            out[pos % len(out)] = value
    return bytes(out) + tail


payload = st.one_of(
    st.binary(max_size=400),
    st.builds(_mutated, st.sampled_from(PAYLOADS), st.lists(st.integers(0, 4095), max_size=4),
              st.lists(st.integers(0, 255), max_size=4), st.binary(max_size=16)),
)
flows = st.lists(st.tuples(st.integers(0, 1), payload), min_size=1, max_size=5)


@pytest.mark.parametrize("key", sorted(HEURISTICS))
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(flow=flows, tcp=st.booleans())
def test_random_and_mutated_payloads(key: str, flow: list[tuple[int, bytes]], tcp: bool) -> None:
    run_detector(HEURISTICS[key], flow, TCP if tcp else UDP)


#: Payloads a crafted-input fuzzing round found making a detector raise (each was recorded as a layer
#: error on its flow, and an SMB flow lost its verdict): (heuristic name, transport, payloads).
FOUND_RAISING = [
    ("BitTorrent", UDP, [(0, b"d1:ti--1e1:y1:qe")]),                       # int(b"--1")
    ("SMB", TCP, [(0, b"\x00\x00\x00\x10\xfcSMB" + bytes(4))]),             # compression header cut short
    ("SMB", TCP, [(0, b"\x00\x00\x00\x40\xfeSMB" + struct.pack("<H", 64) + bytes(58)
                   + b"\x00\x00\x00\x10\xfcSMB" + bytes(4))]),              # ... as a second message
]


@pytest.mark.parametrize("name, transport, flow", FOUND_RAISING, ids=[f"{n}-{i}" for i, (n, _, _) in
                                                                    enumerate(FOUND_RAISING)])
def test_payloads_found_by_fuzzing_do_not_raise(name: str, transport: int, flow: list[tuple[int, bytes]]) -> None:
    found = [h for h in HEURISTICS.values() if h.name == name]
    assert found
    for h in found:
        run_detector(h, flow, transport)


#: Payloads that once took a detector time quadratic in their size (a regex retried at every split of a
#: run of spaces, a list sliced once per NUL): at these sizes, ten minutes to hours then, milliseconds
#: now.  (SIP and RTSP had the HTTP regex's shape too, but read at most 8 / 4 KB: under a second.)
_SLOW = {
    "HTTP request": ("HTTP", TCP, 0, b"GET / HTTP/1.1\r\nHost: x\r\na:" + b" " * 250_000 + b"\rx\r\n\r\n"),
    "HTTP response": ("HTTP", TCP, 1, b"HTTP/1.1 200 OK\r\na:" + b" " * 250_000 + b"\rx\r\n\r\n"),
    "TFTP": ("TFTP", UDP, 0, b"\x00\x01a" + bytes(2_000_000)),
}


@pytest.mark.parametrize("case", sorted(_SLOW))
def test_hostile_payloads_take_linear_time(case: str) -> None:
    """Each case in a child process that must finish well inside a minute (it takes milliseconds; the
    quadratic code took from minutes to hours): a hang guard, not a speed target."""
    import subprocess
    import sys

    name, transport, direction, data = _SLOW[case]
    code = (f"from dpi_heuristics.protocols import all_heuristics\n"
            f"from dpi_heuristics.testing import run_detector\n"
            f"import sys\ndata = sys.stdin.buffer.read()\n"
            f"ran = 0\n"
            f"for h in all_heuristics():\n"
            f"    if h.name == {name!r}:\n"
            f"        run_detector(h, [({direction}, data)], {transport})\n"
            f"        ran += 1\n"
            f"assert ran, 'no heuristic named {name}'\n")
    subprocess.run([sys.executable, "-c", code], input=data, timeout=60, check=True)
