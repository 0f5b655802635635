"""Tests against the real libprotoident 2.0.15; they skip, saying why, where it is not installed.

No registry ships libprotoident, so these run only on a machine where a
user built it (docs/lpi.md).  The last one is the layer's acceptance
measure: agreement with libprotoident's own lpi_update_data on the corpus.
"""

from __future__ import annotations

import pytest

from dpicore.api import synthetic_packets
from dpicore.corpus import captures
from dpicore.model import TCP

from dpi_lpi import locate, runtime
from dpi_lpi.binding import Library
from dpi_lpi.flowdata import LpiFlowData

NOT_INSTALLED = ("libprotoident is not installed on this machine (no registry ships it; "
                 "build 2.0.15 as docs/lpi.md says, or set DPI_LPI_LIBRARY)")


@pytest.fixture(scope="module")
def real_library():
    try:
        library = runtime.acquire({})
    except locate.LpiUnavailable:
        pytest.skip(NOT_INSTALLED)
    yield library
    runtime.release(library)


def _flow(request: bytes, reply: bytes, port: int) -> LpiFlowData:
    state = LpiFlowData()
    packets = synthetic_packets(request, TCP, 40000, port, False)
    packets.append(synthetic_packets(reply, TCP, 40000, port, True)[-1])
    for pkt in packets:
        state.update(pkt, 0 if pkt.sport == 40000 else 1)
    return state


def test_real_struct_is_the_2_0_15_one(real_library: Library) -> None:
    assert real_library.probe_data_size() == 52


def test_real_library_names_http(real_library: Library) -> None:
    guess = real_library.guess(_flow(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n", 80).to_struct())
    assert guess.name == "HTTP" and guess.category_name == "Web"


def test_real_library_names_ssh_and_no_payload(real_library: Library) -> None:
    assert real_library.guess(_flow(b"SSH-2.0-OpenSSH_9.2\r\n", b"SSH-2.0-OpenSSH_9.2\r\n", 22).to_struct()
                              ).name == "SSH"
    empty = LpiFlowData()
    for pkt in synthetic_packets(b"x", TCP, 40000, 9, False)[:3]:
        empty.update(pkt, 0 if pkt.sport == 40000 else 1)
    assert real_library.guess(empty.to_struct()).name in ("No_Payload", "Unknown_TCP")


def test_agreement_with_lpi_update_data_on_the_corpus(real_library: Library, corpus, agreement) -> None:
    """Acceptance: >= 99% of TCP/UDP flows get libprotoident's own answer (through libtrace)."""
    try:
        result = agreement.measure([path for path, _ in captures(corpus)], real_library.path)
    except agreement.ReferenceUnavailable as exc:
        pytest.skip(f"libprotoident is installed but the reference program cannot be built: {exc}")
    assert result.compared >= 500
    assert result.ratio >= agreement.TARGET, result.differences.most_common(10)
