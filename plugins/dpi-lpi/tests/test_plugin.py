"""The layer inside the real dpicore pipeline (entry point, configure, engine), over the C test double."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dpicore import Classifier
from dpicore.api import synthetic_packets
from dpicore.config import config_from_dict
from dpicore.model import ACK, PSH, SYN, TCP, UDP
from dpicore.plugins import FAILED, LOADED

from dpi_lpi import runtime

DPI = [sys.executable, "-m", "dpicore.cli"]


def test_first_payload_both_ways_decides_the_flow(fake_lpi, lpi_classifier, parse_dump) -> None:
    with lpi_classifier(fake_lpi) as clf:
        verdict = clf.classify_payload(b"GET / HTTP/1.1\r\n\r\n", "tcp", 40000, 8080)
    seen = parse_dump(verdict.metadata["lpi_protocol"])
    assert verdict.source == "lpi"
    assert seen["p0"] == b"GET ".hex() and seen["len"] == "18,0"
    assert seen["sp"] == "8080" and seen["cp"] == "40000" and seen["syn"] == "1,1"
    assert seen["ip0"] == bytes([192, 0, 2, 1]).hex() and seen["ip1"] == bytes([198, 51, 100, 1]).hex()


def test_verdict_waits_for_both_directions_then_stops(fake_lpi, lpi_classifier, parse_dump) -> None:
    """The layer answers on the packet completing both first payloads; later packets change nothing."""
    request = synthetic_packets(b"QUERY", TCP, 40000, 7000, False)
    reply = synthetic_packets(b"ANSWER", TCP, 40000, 7000, True)[-1]
    late = synthetic_packets(b"LATER", TCP, 40000, 7000, False)[-1]
    late.seq += 5
    late.ts = reply.ts + 1
    reply.ts = request[-1].ts + 0.5
    with lpi_classifier(fake_lpi) as clf:
        flow = clf.classify_flow([*request, reply, late])
    assert len(flow.verdicts) == 1
    seen = parse_dump(flow.verdicts[0].metadata["lpi_protocol"])
    assert seen["p0"] == b"QUER".hex() and seen["p1"] == b"ANSW".hex() and seen["obs"] == "5,6"


@pytest.mark.parametrize(("lpi_name", "priority", "protocol", "confidence"), [
    ("SSL/TLS", 3, "TLS", 0.85),
    ("HTTP_NonStandard", 5, "HTTP", 0.75),
    ("DNS_TCP", 5, "DNS", 0.75),
    ("ESP_UDP", 200, "IPsec", 0.45),
    ("Unknown_TCP", 3, "Unknown", 0.0),
    ("No_Payload", 3, "Unknown", 0.0),
    ("Mystery_9000", 250, "Mystery_9000", 0.45),
])
def test_names_are_canonical_and_libprotoident_s_own_are_kept(build_fake, lpi_classifier, lpi_name, priority,
                                                              protocol, confidence) -> None:
    lib = build_fake(f'FAKE_NAME="{lpi_name}"', f"FAKE_PRIORITY={priority}")
    with lpi_classifier(lib) as clf:
        flow = clf.classify_flow(synthetic_packets(b"\x00\x01", UDP, 5000, 53, False))
    verdict = flow.verdicts[0]
    assert (verdict.protocol, verdict.confidence) == (protocol, confidence)
    assert verdict.metadata["lpi_protocol"] == lpi_name
    assert verdict.metadata["lpi_category"] == verdict.category == "category-7"


def test_flow_end_guesses_with_what_was_seen(fake_lpi, lpi_classifier, parse_dump) -> None:
    with lpi_classifier(fake_lpi) as clf:
        flow = clf.classify_flow(synthetic_packets(b"\x01\x01\x06\x00" + bytes(40), UDP, 68, 67, False))
    seen = parse_dump(flow.verdicts[0].metadata["lpi_protocol"])
    assert seen["len"] == "44,0" and seen["p0"] == "01010600" and seen["tp"] == "17"


def test_packet_budget_is_configurable(fake_lpi, lpi_classifier, parse_dump) -> None:
    packets = synthetic_packets(b"HELLO", TCP, 40000, 9000, False)  # SYN, SYN/ACK, ACK, data
    with lpi_classifier(fake_lpi, max_packets=2) as clf:
        flow = clf.classify_flow(packets)
    seen = parse_dump(flow.verdicts[0].metadata["lpi_protocol"])
    assert seen["len"] == "0,0" and seen["syn"] == "1,1"  # guessed after two packets, before the data


def test_bad_settings_fail_the_layer_with_the_reason(fake_lpi) -> None:
    for settings, message in (({"max_packets": 0}, "max_packets must be a positive integer"),
                              ({"struct": 1}, "unknown setting")):
        config = config_from_dict({"layers": {"lpi": {"library": str(fake_lpi), **settings}}})
        with Classifier(config=config) as clf:
            status = clf.plugins.statuses["lpi"]
        assert status.status == FAILED and message in status.reason


def test_missing_library_fails_only_this_layer(tmp_path) -> None:
    missing = tmp_path / "libprotoident.so.2"
    config = config_from_dict({"layers": {"lpi": {"library": str(missing)}}})
    with Classifier(config=config) as clf:
        status = clf.plugins.statuses["lpi"]
        others = [s for s in clf.plugins.statuses.values() if s.id != "lpi"]
        verdict = clf.classify_payload(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    assert status.status == FAILED
    assert str(missing) in status.reason and "docs/lpi.md" in status.reason
    assert all(s.status == LOADED for s in others)
    if any(s.id == "heuristics" for s in others):
        assert verdict.protocol == "HTTP"


def test_dpi_plugins_explains_why_lpi_is_unavailable(tmp_path) -> None:
    env = {**os.environ, "DPI_LPI_LIBRARY": str(tmp_path / "nowhere.so")}
    done = subprocess.run([*DPI, "plugins", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = {row["id"]: row for row in json.loads(done.stdout)}
    assert rows["lpi"]["status"] == "failed"
    assert "DPI_LPI_LIBRARY" in rows["lpi"]["reason"] and "docs/lpi.md" in rows["lpi"]["reason"]
    assert all(row["status"] == "loaded" for name, row in rows.items() if name != "lpi")


def test_environment_variable_wins_over_configuration(fake_lpi, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DPI_LPI_LIBRARY", str(fake_lpi))
    with Classifier(config=config_from_dict({"layers": {"lpi": {"library": str(tmp_path / "x.so")}}}),
                    layers=["lpi"]) as clf:
        assert clf.plugins.statuses["lpi"].status == LOADED
        assert str(fake_lpi) in clf.plugins.statuses["lpi"].description


def test_library_stays_initialised_while_another_classifier_uses_it(fake_lpi, lpi_classifier) -> None:
    with lpi_classifier(fake_lpi) as first:
        with lpi_classifier(fake_lpi) as second:
            assert first.plugins.plugin("lpi") is not second.plugins.plugin("lpi")
        verdict = first.classify_payload(b"ping", "udp", 1, 2)
        library = first.plugins.plugin("lpi").library
        assert runtime._open[library.path][1] == 1, "the closed classifier gave its hold back"
    assert verdict.source == "lpi"
    assert library.path not in runtime._open, "the last holder freed the library"


def test_engine_calls_the_layer_for_empty_packets(fake_lpi, lpi_classifier, parse_dump) -> None:
    """wants_empty: the SYN sets seqno, so the data segment must be the one at ISN+1."""
    packets = synthetic_packets(b"DATA", TCP, 40000, 9000, False)
    assert [p.tcp_flags for p in packets] == [SYN, SYN | ACK, ACK, PSH | ACK]
    with lpi_classifier(fake_lpi) as clf:
        flow = clf.classify_flow(packets)
    seen = parse_dump(flow.verdicts[0].metadata["lpi_protocol"])
    assert seen["seq"] == "1001,5001" and seen["p0"] == b"DATA".hex()
