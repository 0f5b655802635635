"""First-byte filters read off a detector's own checks must never turn away what the detector accepts.

Some heuristics' filters are not a protocol's known first bytes but a consequence of what the
detector tests (STUN over UDP: a message type below 0x0200; ONC RPC over TCP: a record mark of at
most 16 MB).  They save a call per flow the detector would reject anyway (benchmarks/detector_calls.py).
Here a valid message of each kind is accepted by its detector with its real first byte, and with
every first byte the filter leaves out it is rejected: a detector loosened without its filter (or a
filter tightened past the detector) fails.
"""

from __future__ import annotations

import struct

import pytest
from dpicore import Verdict
from dpicore.model import TCP, UDP

from dpi_heuristics.base import Heuristic
from dpi_heuristics.protocols import all_heuristics, oncrpc, stun
from dpi_heuristics.testing import rpc_call, rpc_record, run_detector, stun_message


def the(name: str, transport: int) -> Heuristic:
    (h,) = [h for h in all_heuristics() if h.name == name and transport in h.transports]
    return h


def method_type(method: int, cls: int) -> int:
    """STUN's message type: the method's bits around the two class bits (RFC 8489 §5)."""
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | ((cls & 1) << 4) | \
        ((cls & 2) << 7)


SAMPLES = [
    *[("STUN", UDP, stun_message(method_type(m, c))) for m in stun.METHODS for c in range(4)],
    *[("STUN", UDP, stun_message(t, struct.pack("!HH", 0x0003, 4) + bytes(4), cookie=0x01020304))
      for t in sorted(stun.CLASSIC_TYPES)],
    ("NFS", TCP, rpc_record(rpc_call(), last=True)),
    ("NFS", TCP, rpc_record(rpc_call(), last=False)),
]


@pytest.mark.parametrize(("name", "transport", "message"), SAMPLES,
                         ids=[f"{n}-{'tcp' if t == TCP else 'udp'}-{m[:2].hex()}" for n, t, m in SAMPLES])
def test_a_filter_leaves_out_only_first_bytes_its_detector_rejects(name: str, transport: int,
                                                                   message: bytes) -> None:
    h = the(name, transport)
    assert h.first_bytes is not None and message[0] in h.first_bytes
    (accepted,) = run_detector(h, [(0, message)], transport)
    assert isinstance(accepted, Verdict) and accepted.protocol == name
    for first in sorted(set(range(256)) - h.first_bytes):
        (result,) = run_detector(h, [(0, bytes([first]) + message[1:])], transport)
        assert result is None, f"{name} accepts a first byte of {first:#04x} its filter leaves out"


def test_the_record_mark_filter_is_the_detectors_length_limit() -> None:
    """The longest fragment the TCP reading accepts sets the filter's highest first byte."""
    assert max(oncrpc.RECORD_MARK_FIRST_BYTES) == (0x80000000 | oncrpc.MAX_FRAGMENT) >> 24
