"""The layer's hooks: settings, verdicts, protocol names, and releasing every flow."""

from __future__ import annotations

from typing import Any

import pytest

from dpicore import Classifier, Config, canonical
from dpicore.api import synthetic_packets
from dpicore.model import TCP, UDP
from dpicore.protocols import UNKNOWN, ProtocolRegistry
from dpi_ndpi import plugin
from dpi_ndpi.detector import NdpiResult
from dpi_ndpi.verdicts import ALIASES, CONFIDENCE, protocol_specs, to_verdict


def result(master: str = "Unknown", app: str = "Unknown", label: str | None = None, confidence: str = "DPI",
           host: str = "", gave_up: bool = False) -> NdpiResult:
    return NdpiResult(master, app, label or app, "Web", confidence, host, gave_up)


class TestSettings:
    def test_defaults_follow_ndpireader(self) -> None:
        assert plugin._settings({}) == (80, 24, True, 256)

    def test_engine_cap_never_cuts_before_the_ndpi_budget(self) -> None:
        assert plugin._settings({"tcp_packets": 500})[3] == 501

    @pytest.mark.parametrize("config, message", [
        ({"tcp_packet": 3}, "unknown setting"),
        ({"tcp_packets": 0}, "tcp_packets"),
        ({"udp_packets": True}, "udp_packets"),
        ({"guess": "yes"}, "guess"),
        ({"max_packets": 10**6}, "max_packets"),
    ])
    def test_bad_settings_are_refused(self, config: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            plugin._settings(config)

    def test_a_bad_setting_fails_the_layer_not_the_run(self, abi: Any) -> None:
        with Classifier(config=Config(layer_settings={"ndpi": {"tcp_packets": -1}})) as clf:
            assert clf.plugins.statuses["ndpi"].status == "failed"
            assert "tcp_packets" in clf.plugins.statuses["ndpi"].reason


class TestVerdicts:
    def test_master_names_the_protocol_and_the_app_is_kept(self) -> None:
        v = to_verdict(result("TLS", "Google", "TLS.Google", host="www.google.com"))
        assert (v.protocol, v.app, v.source) == ("TLS", "Google", "ndpi")
        assert v.metadata == {"ndpi_label": "TLS.Google", "ndpi_confidence": "DPI", "host": "www.google.com"}
        assert v.confidence == CONFIDENCE["DPI"]

    def test_without_master_the_app_is_the_protocol(self) -> None:
        v = to_verdict(result(app="Facebook", confidence="Match by IP", gave_up=True))
        assert (v.protocol, v.app) == ("Facebook", None)
        assert v.confidence < 0.5 and v.metadata["ndpi_gave_up"] is True

    def test_ndpi_spellings_become_canonical(self) -> None:
        assert to_verdict(result(app="FTP_CONTROL")).protocol == "FTP"
        assert to_verdict(result("NetBIOS", "SMBv1", "NetBIOS.SMBv1")).protocol == "NetBIOS"
        assert to_verdict(result(app="ICMPV6")).protocol == "ICMP"

    def test_guesses_rank_below_dpi(self) -> None:
        scores = [CONFIDENCE[name] for name in ("DPI", "DPI (cache)", "Match by IP", "Match by port", "Unknown")]
        assert scores == sorted(scores, reverse=True) and scores[2] < 0.5 <= scores[1]

    def test_unknown(self) -> None:
        v = to_verdict(result(label="Unknown", confidence="Unknown"))
        assert (v.protocol, v.confidence, v.metadata["ndpi_label"]) == (UNKNOWN, 0.0, "Unknown")


def test_protocol_names_register_with_aliases_first() -> None:
    reg = ProtocolRegistry()
    for spec in protocol_specs(["Unknown", "Whois-DAS", "GTP_U", "WhatsApp", "FTP_CONTROL"]):
        reg.register(spec)
    assert reg.canonical("Whois-DAS") == "Whois"
    assert reg.canonical("GTP_U") == "GTP"
    assert reg.canonical("WhatsApp") == "WhatsApp" and reg.is_known("WhatsApp")
    assert reg.canonical("FTP_CONTROL") == "FTP"
    assert "Unknown" not in [s for s in protocol_specs(["Unknown"]) if isinstance(s, str)]
    assert all(spec in protocol_specs([]) for spec in ALIASES)


def test_the_layer_registers_every_ndpi_name(abi: Any) -> None:
    with Classifier(layers=["ndpi"]) as clf:
        info = clf.engine.layers[0].info
        assert info.wants_empty and info.max_packets == 256
        assert len(info.protocols) > 250 and "WhatsApp" in info.protocols
    assert canonical("Whois-DAS") == "Whois"


def _live(clf: Classifier) -> int:
    """nDPI flows this classifier's module still tracks."""
    return clf.plugins.plugin("ndpi").detector.live


def test_flows_decided_by_another_layer_are_released(abi: Any) -> None:
    """heuristics (priority 10) names HTTP first; nDPI's flow is released as 'decided'."""
    with Classifier(layers=["heuristics", "ndpi"]) as clf:
        packets = synthetic_packets(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n", TCP, 40000, 80, False)
        flow = clf.classify_flow(packets)
        assert flow.verdict is not None and flow.verdict.source == "heuristics"
        assert _live(clf) == 0


def test_a_flow_ending_undetected_gets_ndpis_giveup(abi: Any) -> None:
    with Classifier(layers=["ndpi"]) as clf:
        packets = synthetic_packets(bytes(range(7, 127)), UDP, 40000, 5060, False)
        flow = clf.classify_flow(packets)
        assert _live(clf) == 0
    v = flow.verdict
    assert v is not None and v.protocol == "SIP"
    assert v.metadata["ndpi_confidence"] == "Match by port" and v.metadata["ndpi_gave_up"] is True


def test_all_layers_mode_keeps_ndpis_answer(abi: Any) -> None:
    with Classifier(layers=["heuristics", "ndpi"], all_layers=True) as clf:
        packets = synthetic_packets(b"GET / HTTP/1.1\r\nHost: b.example\r\n\r\n", TCP, 40000, 80, False)
        flow = clf.classify_flow(packets)
        assert _live(clf) == 0
    by_layer = {v.source: v for v in flow.verdicts}
    assert by_layer["ndpi"].protocol == "HTTP" and by_layer["ndpi"].metadata["host"] == "b.example"
