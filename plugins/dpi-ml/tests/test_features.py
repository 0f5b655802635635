"""Feature extraction: the layout, the values real packets give, and hostile input."""

from __future__ import annotations

import numpy as np
import pytest

from dpicore import Classifier, synthetic_packets
from dpicore.model import SYN, TCP, UDP
from dpi_ml.dataset import COLLECTOR_ID, Collector
from dpi_ml.features import (FEATURE_NAMES, MISSING, N_BYTES, N_FEATURES, N_PACKETS, N_SCAN, FlowSummary, add,
                             count, feature_spec, first, first_index, matrix, new_summary, packets, vector)
from dpi_ml.predict import observable

_BODY = b"\x03\x03" + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00" + bytes(60)
_HANDSHAKE = b"\x01" + len(_BODY).to_bytes(3, "big") + _BODY
TLS_HELLO = b"\x16\x03\x01" + len(_HANDSHAKE).to_bytes(2, "big") + _HANDSHAKE


def column(v: np.ndarray, name: str) -> float:
    return float(v[FEATURE_NAMES.index(name)])


def summarise(payload: bytes, proto: int = TCP, sport: int = 40000, dport: int = 4433,
              from_server: bool = False) -> FlowSummary:
    """The summary the collector (hence the layer) builds for real decoded packets around one payload."""
    collector = Collector()
    with Classifier(layers=[COLLECTOR_ID], extra_plugins=[(COLLECTOR_ID, collector)], all_layers=True) as clf:
        flows = list(clf.classify_packets(synthetic_packets(payload, proto, sport, dport, from_server)))
    assert len(flows) == 1
    return collector.summaries[flows[0]]


def test_layout_is_fixed_and_named() -> None:
    assert len(FEATURE_NAMES) == N_FEATURES == len(set(FEATURE_NAMES))
    spec = feature_spec()
    assert spec["packets"] == N_PACKETS and spec["bytes"] == N_BYTES and spec["names"] == list(FEATURE_NAMES)


def test_tls_client_hello_through_the_engine() -> None:
    v = vector(summarise(TLS_HELLO))
    assert v.shape == (N_FEATURES,)
    assert column(v, "transport") == TCP
    # SYN, SYN/ACK, ACK, then the hello: directions, flags and sizes in order.
    assert [column(v, f"p{i}_dir") for i in range(4)] == [0, 1, 0, 0]
    assert column(v, "p0_flags") == SYN and column(v, "p1_flags") == SYN | 0x10
    assert column(v, "p3_size") == len(TLS_HELLO)
    assert column(v, "p4_dir") == MISSING and column(v, "p7_size") == MISSING
    assert [column(v, f"c2s_b{j}") for j in range(5)] == list(TLS_HELLO[:5])
    assert column(v, "c2s_len") == len(TLS_HELLO) and column(v, "c2s_first_index") == 3
    # The TLS record length (bytes 3-4) is the payload length minus the 5-byte header.
    assert column(v, "c2s_len_3_2be_5") == 1.0
    assert column(v, "c2s_len_0_2be_0") == 0.0
    assert column(v, "s2c_len") == MISSING and column(v, "s2c_b0") == MISSING
    assert column(v, "first_payload_dir") == 0.0
    assert column(v, "c2s_payload_packets") == 1 and column(v, "s2c_payload_bytes") == 0
    assert column(v, "packets") == 4 and column(v, "c2s_packets") == 3
    assert column(v, "server_port_low") == 0.0 and column(v, "ports_equal") == 0.0
    assert np.all(np.array([column(v, f"p{i}_iat") for i in range(4)]) >= 0)


def test_server_first_text_protocol() -> None:
    banner = b"220 mail.example.org ESMTP ready\r\n"
    v = vector(summarise(banner, dport=25, from_server=True))
    assert column(v, "first_payload_dir") == 1.0
    assert column(v, "s2c_printable") == 1.0 and column(v, "c2s_len") == MISSING
    assert column(v, "server_port_low") == 1.0
    assert 0 < column(v, "s2c_distinct") < 1


def test_udp_same_ports_and_short_payload() -> None:
    v = vector(summarise(b"\x01\x02", proto=UDP, sport=5353, dport=5353))
    assert column(v, "ports_equal") == 1.0 and column(v, "transport") == UDP
    assert column(v, "c2s_b1") == 2.0 and column(v, "c2s_b2") == MISSING
    # A 4-byte length field cannot be read from 2 bytes: missing, not "no match".
    assert column(v, "c2s_len_0_4be_0") == MISSING


def test_only_the_first_packets_count() -> None:
    s = new_summary(TCP, 1234, 80)
    full = [add(s, float(i), i % 2, 10 * i, 0x18, b"x" * i) for i in range(N_PACKETS + 3)]
    assert full.index(True) == N_PACKETS - 1 and count(s) == N_PACKETS
    # Packet 0 had no payload: (scanned length, printable bytes, distinct bytes, leading bytes).
    assert first(s, 1) == (1, 1, 1, b"x") and first(s, 0) == (2, 2, 1, b"xx") and first_index(s) == (2, 1)
    assert packets(s) == [(float(i), i % 2, 10 * i, 0x18) for i in range(N_PACKETS)]
    # The two first payloads' records sit after the packets that carried them, nothing reserved: the
    # head, the packets and two records.
    assert len(s) == 7 + 15 * N_PACKETS + 2 * (4 + N_BYTES)


def test_a_server_first_payload_is_found_behind_the_client_ones() -> None:
    s = new_summary(TCP, 1234, 25)
    add(s, 0.0, 1, 5, 0x18, b"220 x")
    add(s, 1.0, 0, 4, 0x18, b"EHLO")
    add(s, 2.0, 1, 3, 0x18, b"250")
    assert first_index(s) == (1, 0)
    assert first(s, 1) == (5, 5, 4, b"220 x") and first(s, 0) == (4, 4, 4, b"EHLO")
    assert packets(s) == [(0.0, 1, 5, 0x18), (1.0, 0, 4, 0x18), (2.0, 1, 3, 0x18)]


@pytest.mark.parametrize("payload", [b"", b"\x00", bytes(range(256)) * 8, b"\xff" * 70000])
def test_hostile_payloads_never_raise(payload: bytes) -> None:
    s = new_summary(UDP, 1, 2)
    add(s, 5.0, 0, len(payload), 0, payload)
    add(s, 1.0, 1, 3, 0, b"abc")  # the clock jumps back: inter-arrival time clipped at 0
    v = vector(s)
    assert v.shape == (N_FEATURES,) and np.all(np.isfinite(v))
    assert column(v, "p1_iat") == 0.0
    if payload:
        assert first(s, 0)[0] == min(len(payload), N_SCAN)  # type: ignore[index]


def test_matrix_stacks_vectors_and_payloadless_flows_are_not_observable() -> None:
    a, b = new_summary(TCP, 1, 2), new_summary(TCP, 1, 2)
    add(a, 0.0, 0, 0, SYN, b"")
    add(b, 0.0, 0, 4, 0x18, b"ping")
    assert np.array_equal(matrix([a, b]), np.stack([vector(a), vector(b)]))
    assert matrix([]).shape == (0, N_FEATURES)
    assert not observable(a) and observable(b)
    assert observable(new_summary(1))  # ICMP: the transport names it


@pytest.mark.parametrize("seed", range(20))
def test_counts_kept_at_arrival_give_the_columns_of_the_whole_payload(seed: int) -> None:
    """The summary keeps counts, not the payload: its columns must equal those read off the payload itself."""
    rng = np.random.default_rng(seed)
    payloads = [rng.integers(0, 256 if seed % 2 else 128, int(rng.integers(1, 600)), dtype=np.uint8).tobytes()
                for _ in range(2)]
    s = new_summary(TCP, 1, 2)
    add(s, 0.0, 0, 0, SYN, b"")
    for d, p in enumerate(payloads):
        add(s, 1.0 + d, d, len(p), 0x18, p)
    v = vector(s)
    for d, p in zip(("c2s", "s2c"), payloads):
        raw = np.frombuffer(p[:N_SCAN], dtype=np.uint8)
        printable = np.isin(raw, list(range(32, 127)) + [9, 10, 13])
        assert column(v, f"{d}_printable") == np.count_nonzero(printable) / raw.size
        assert column(v, f"{d}_distinct") == np.unique(raw).size / raw.size
        assert [column(v, f"{d}_b{j}") for j in range(N_BYTES)] == (
            [float(b) for b in raw[:N_BYTES]] + [MISSING] * (N_BYTES - min(raw.size, N_BYTES)))
        assert column(v, f"{d}_len") == len(p)
        assert column(v, f"{d}_len_0_2be_0") == (float(int.from_bytes(p[:2], "big") == len(p)) if len(p) >= 2
                                                 else MISSING)


def test_packet_values_no_capture_gives_are_clamped_not_raised() -> None:
    """A Packet made through the API can carry any int: a negative size, flags past 16 bits, a size past 32."""
    s = new_summary(TCP, 1, 2)
    add(s, 1.0, 0, -5, 0x1FF18, b"ab")
    add(s, 2.0, 7, 2 ** 40, 0x10, b"")
    assert packets(s) == [(1.0, 0, 0, 0xFF18), (2.0, 1, 0xFFFFFFFF, 0x10)]
    assert vector(s).shape == (N_FEATURES,)
