"""The ML layer running inside dpicore: discovery, configuration, answers, abstention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dpicore import Classifier, Config, PluginError, UNKNOWN, discover, synthetic_packets
from dpicore.corpus import flow_key
from dpicore.model import TCP
from dpicore.plugins import FAILED, LOADED
from dpi_ml import plugin
from dpi_ml.dataset import collect
from dpi_ml.features import N_PACKETS
from dpi_ml.model import load
from dpi_ml.predict import predict

CAPTURE = "iphone.pcap"


def ml_config(**settings: Any) -> Config:
    return Config(layer_settings={"ml": settings})


def test_discovered_through_its_entry_point_after_heuristics_and_ndpi() -> None:
    plugins = discover(Config())
    try:
        st = plugins.statuses["ml"]
        assert st.status == LOADED and st.distribution == "dpi-ml"
        layer = next(layer for layer in plugins.layers if layer.id == "ml")
        assert layer.priority == plugin.DEFAULT_PRIORITY == 40
        assert layer.info.wants_empty and layer.info.max_packets == N_PACKETS
        before = [l.priority for l in plugins.layers if l.id in ("heuristics", "ndpi")]
        assert all(p < layer.priority for p in before)
    finally:
        plugins.close()


def test_layer_answers_what_the_model_predicts_for_the_same_flows(corpus: Path) -> None:
    """The layer (hooks, per-packet collection) and the training path (collector) agree flow by flow."""
    pcap = corpus / "pcap" / CAPTURE
    with Classifier(layers=["ml"]) as clf:
        flows = list(clf.classify_pcap(pcap))
    model = load(plugin.DEFAULT_MODEL)
    threshold = model.threshold_default
    expected = {}
    for s in collect([pcap]):
        names, conf = predict(model, [s.summary])
        expected[flow_key(s.flow)] = names[0] if names[0] != UNKNOWN and conf[0] >= threshold else UNKNOWN
    named = 0
    for flow in flows:
        key = flow_key(flow)
        if key not in expected:
            continue  # a flow the labels do not mention
        got = flow.verdict.protocol if flow.verdict else UNKNOWN
        assert got == expected[key], key
        if flow.verdict is not None:
            assert flow.verdict.source == "ml" and flow.verdict.confidence >= threshold
            named += 1
    assert named >= 10  # iphone.pcap has DNS, TLS, MDNS, … flows the layer names


def test_all_layers_mode_keeps_the_ml_verdict(corpus: Path) -> None:
    with Classifier(layers=["heuristics", "ml"], all_layers=True) as clf:
        flows = list(clf.classify_pcap(corpus / "pcap" / CAPTURE))
    both = [f for f in flows if {v.source for v in f.verdicts} >= {"heuristics", "ml"}]
    assert len(both) >= 5


def test_threshold_one_makes_the_layer_abstain(corpus: Path) -> None:
    # Calibrated confidences never reach 1 (capped below certainty), so nothing is answered.
    with Classifier(config=ml_config(threshold=1.0), layers=["ml"]) as clf:
        flows = list(clf.classify_pcap(corpus / "pcap" / CAPTURE))
    assert flows and all(f.verdict is None for f in flows)


def test_payloadless_flow_gets_no_answer() -> None:
    with Classifier(config=ml_config(threshold=0.0), layers=["ml"]) as clf:
        handshake = synthetic_packets(b"", TCP, 40000, 443, False)[:3]
        flow = clf.classify_flow(handshake)
    assert flow.verdict is None


def test_short_flow_is_predicted_at_its_end() -> None:
    """A flow with fewer packets than the layer's budget is answered when it ends."""
    with Classifier(config=ml_config(threshold=0.0), layers=["ml"]) as clf:
        flow = clf.classify_flow(synthetic_packets(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", TCP, 40000, 8080, False))
    assert flow.packets < N_PACKETS
    assert flow.verdict is not None and flow.verdict.source == "ml"


def test_user_model_path_and_corrupt_model(tmp_path: Path) -> None:
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"\x00garbage")
    plugins = discover(ml_config(model=str(bad)))
    try:
        st = plugins.statuses["ml"]
        assert st.status == FAILED and "broken.npz" in st.reason and "not a dpi-ml model" in st.reason
        assert "ml" not in [layer.id for layer in plugins.layers]
    finally:
        plugins.close()
    with pytest.raises(PluginError, match="broken.npz"):
        Classifier(config=ml_config(model=str(bad)), layers=["ml"])
    copy = tmp_path / "mine.npz"
    copy.write_bytes(plugin.DEFAULT_MODEL.read_bytes())
    with Classifier(config=ml_config(model=str(copy)), layers=["ml"]) as clf:
        assert clf.layers == ["ml"]


@pytest.mark.parametrize("value", [1.5, -0.1, "high", True])
def test_bad_threshold_fails_the_layer(value: Any) -> None:
    plugins = discover(ml_config(threshold=value))
    try:
        assert plugins.statuses["ml"].status == FAILED
        assert "layers.ml.threshold" in plugins.statuses["ml"].reason
    finally:
        plugins.close()


@pytest.mark.parametrize("setting", ["modle", "threshhold"])
def test_a_misspelt_setting_fails_the_layer(setting: str) -> None:
    """`modle = ...` ran the shipped model in silence; ndpi and lpi refuse unknown settings the same way."""
    plugins = discover(ml_config(**{setting: "x"}))
    try:
        assert plugins.statuses["ml"].status == FAILED
        assert f"layers.ml: unknown setting(s) {setting}" in plugins.statuses["ml"].reason
    finally:
        plugins.close()
