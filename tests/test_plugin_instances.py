"""Two Classifiers in one process are independent: each has its own layer objects.

An entry point that names a class gets one instance per plugin manager
(:func:`dpicore.plugins.instantiate`), so a classifier's settings, nDPI
module and model never leak into another's, and closing one does not tear
down the other.  Each check classifies real captures (samples/sample.pcap,
the real-client captures, the nDPI corpus) with two classifiers configured
differently, their packets fed alternately, and compares each classifier's
answers with what the same configuration answers when it runs alone.  The
configurations are chosen so that their answers differ on those captures:
if the two classifiers shared a layer's state, one of them would answer
with the other's settings and the comparison would fail.

A module named by an entry point still loads (third-party plugins written
that way keep working); it is shared by every plugin manager.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

import pytest

from dpicore import Classifier, Config
from dpicore.corpus import captures, flow_key, match
from dpicore.decode import CaptureSource
from dpicore.model import Flow
from dpicore.plugins import FAILED, LOADED, PluginSet
from dpicore.protocols import ProtocolRegistry
from tests import test_plugins

#: The loader tests' helpers: a real EntryPoint, and a fixture writing an importable module.
ep = test_plugins.ep
write_module = test_plugins.write_module

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sample.pcap"
REALCLIENTS = ROOT / "tests" / "captures" / "realclients"

Answer = tuple[Any, float, str, str, float, str]


def answers(flows: Iterable[Flow]) -> list[Answer]:
    """What a classifier said about each flow, in an order independent of when flows ended."""
    out = []
    for f in flows:
        v = f.verdict
        out.append((flow_key(f), f.first_seen, v.protocol if v else "-", v.source if v else "-",
                    round(v.confidence, 6) if v else 0.0, repr(sorted(v.metadata.items())) if v else ""))
    return sorted(out, key=repr)


def make(layers: list[str], settings: dict[str, dict[str, Any]]) -> Classifier:
    return Classifier(config=Config(layer_settings=settings), layers=layers)


def alone(path: Path, layers: list[str], settings: dict[str, dict[str, Any]]) -> list[Answer]:
    """The answers of one classifier with this configuration, the only one open."""
    with make(layers, settings) as clf:
        return answers(clf.classify_packets(CaptureSource(path)))


def fed_together(first: Classifier, second: Classifier, path: Path) -> tuple[list[Flow], list[Flow]]:
    """Both classifiers read the capture together: packet i goes to the first, then to the second.

    Each gets its own decoded copy of the packets (the engine may trim a payload in place).
    """
    ended: tuple[list[Flow], list[Flow]] = ([], [])
    for a, b in zip(CaptureSource(path), CaptureSource(path), strict=True):
        ended[0].extend(first.engine.feed(a))
        ended[1].extend(second.engine.feed(b))
    ended[0].extend(first.engine.flush())
    ended[1].extend(second.engine.flush())
    return ended


def interleaved(first: Classifier, second: Classifier, path: Path) -> tuple[list[Answer], list[Answer]]:
    flows = fed_together(first, second, path)
    return answers(flows[0]), answers(flows[1])


def protocols(result: list[Answer]) -> list[str]:
    return [a[2] for a in result]


@pytest.fixture(scope="module")
def ndpi() -> None:
    """Skips where dpi-ndpi or the system libndpi 4.2 is not installed (apt-get install libndpi4.2)."""
    library = pytest.importorskip("dpi_ndpi.library")
    try:
        library.load()
    except library.NdpiUnavailable as exc:
        pytest.skip(str(exc))


# -- heuristics: a blocked protocol stays blocked in one classifier only -----------------------------

HEURISTICS_BLOCK = {"heuristics": {"block": ["HTTP"]}}


@pytest.mark.parametrize("path", [SAMPLE, REALCLIENTS / "http_on_port22.pcap"], ids=lambda p: p.name)
def test_heuristics_block_list_is_per_classifier(path: Path) -> None:
    blocked_ref = alone(path, ["heuristics"], HEURISTICS_BLOCK)
    default_ref = alone(path, ["heuristics"], {})
    assert "HTTP" in protocols(default_ref) and "HTTP" not in protocols(blocked_ref)
    blocked, default = make(["heuristics"], HEURISTICS_BLOCK), make(["heuristics"], {})
    try:
        assert blocked.plugins.plugin("heuristics") is not default.plugins.plugin("heuristics")
        got_blocked, got_default = interleaved(blocked, default, path)
        assert got_blocked == blocked_ref
        assert got_default == default_ref
        default.close()  # the other classifier's teardown leaves this one's selection alone
        assert answers(blocked.classify_pcap(path)) == blocked_ref
    finally:
        blocked.close()
        default.close()


# -- ML: each classifier abstains at its own threshold -----------------------------------------------

ML_STRICT = {"ml": {"threshold": 0.9}}


def test_ml_threshold_is_per_classifier() -> None:
    strict_ref = alone(SAMPLE, ["ml"], ML_STRICT)
    default_ref = alone(SAMPLE, ["ml"], {})
    assert strict_ref != default_ref, "the thresholds must lead to different answers on this capture"
    assert protocols(strict_ref).count("-") > protocols(default_ref).count("-")
    strict, default = make(["ml"], ML_STRICT), make(["ml"], {})
    try:
        assert strict.plugins.plugin("ml").threshold == 0.9
        assert default.plugins.plugin("ml").threshold != 0.9
        got_strict, got_default = interleaved(strict, default, SAMPLE)
        assert got_strict == strict_ref
        assert got_default == default_ref
        strict.close()
        assert answers(default.classify_pcap(SAMPLE)) == default_ref
    finally:
        strict.close()
        default.close()


# -- nDPI: two modules with their own budgets; closing one leaves the other working ------------------

#: nDPI gives up on a TCP flow after 3 packets and a UDP flow after 1: many flows end up Unknown.
NDPI_SHORT = {"ndpi": {"tcp_packets": 3, "udp_packets": 1}}
NDPI_CAPTURES = [SAMPLE, REALCLIENTS / "ftp_pasv.pcap", REALCLIENTS / "redis_cli.pcap"]


@pytest.mark.parametrize("path", NDPI_CAPTURES, ids=lambda p: p.name)
def test_ndpi_modules_are_per_classifier(path: Path, ndpi: None) -> None:
    short_ref = alone(path, ["ndpi"], NDPI_SHORT)
    full_ref = alone(path, ["ndpi"], {})
    assert short_ref != full_ref, "the budgets must lead to different answers on this capture"
    full, short = make(["ndpi"], {}), make(["ndpi"], NDPI_SHORT)
    try:
        full_layer, short_layer = full.plugins.plugin("ndpi"), short.plugins.plugin("ndpi")
        assert full_layer.detector.module != short_layer.detector.module
        got_full, got_short = interleaved(full, short, path)
        assert got_full == full_ref
        assert got_short == short_ref
        assert full_layer.detector.live == 0 and short_layer.detector.live == 0
        # Closing the classifier opened first frees its own module only.
        full.close()
        assert full_layer._detector is None and not short_layer.detector.closed
        assert answers(short.classify_pcap(path)) == short_ref
    finally:
        full.close()
        short.close()
    assert short_layer._detector is None


def test_ndpi_next_to_a_classifier_without_ndpi(ndpi: None) -> None:
    """One classifier with nDPI, one without: each answers as it does alone, whichever closes first."""
    with_ndpi = (["heuristics", "ndpi"], {})
    without = (["heuristics"], HEURISTICS_BLOCK)
    refs = [alone(SAMPLE, *with_ndpi), alone(SAMPLE, *without)]
    assert refs[0] != refs[1]
    first, second = make(*without), make(*with_ndpi)
    try:
        assert second.plugins.plugin("ndpi") is not None and first.plugins.plugin("ndpi") is None
        got = interleaved(second, first, SAMPLE)
        assert list(got) == refs
        first.close()
        assert answers(second.classify_pcap(SAMPLE)) == refs[0]
    finally:
        first.close()
        second.close()


@pytest.mark.corpus
def test_ndpi_interleaved_still_agrees_with_ndpireader(corpus: Path, ndpi: None) -> None:
    """The default classifier, fed alternately with a short-budget one, gives ndpiReader's answers."""
    compared = agree = 0
    for path, labels in captures(corpus):
        if path.name not in ("reddit.pcap", "iphone.pcap", "dns-google-nsid.pcapng", "ftp.pcap"):
            continue
        full, short = make(["ndpi"], {}), make(["ndpi"], NDPI_SHORT)
        try:
            ended, _ = fed_together(full, short, path)
        finally:
            short.close()
            full.close()
        pairs, _, _ = match(((flow_key(f), f) for f in ended), labels)
        for ours, theirs in pairs:
            compared += 1
            agree += (ours.verdict.metadata.get("ndpi_label") if ours.verdict else None) == theirs.proto
    assert compared >= 100
    assert agree / compared >= 0.995, f"{agree}/{compared} flows have ndpiReader's label"


# -- the loader: classes are instantiated per manager, modules are shared ----------------------------

MODULE_STYLE = """
from dpicore import LayerInfo, Verdict, hookimpl
SEEN = []
@hookimpl
def dpi_layer_info():
    return LayerInfo(id="{id}", priority=5, protocols=("Zork",))
@hookimpl
def dpi_configure(config):
    SEEN.append(config.get("tag"))
@hookimpl
def dpi_classify(packet):
    return Verdict("Zork", confidence=0.9) if bytes(packet.payload).startswith(b"ZORK") else None
"""

CLASS_STYLE = """
from dpicore import LayerInfo, Verdict, hookimpl
MADE = []
class ZorkLayer:
    def __init__(self):
        self.tag = None
        MADE.append(self)
    @hookimpl
    def dpi_layer_info(self):
        return LayerInfo(id="{id}", priority=5, protocols=("Zork",))
    @hookimpl
    def dpi_configure(self, config):
        self.tag = config.get("tag")
    @hookimpl
    def dpi_classify(self, packet):
        if bytes(packet.payload).startswith(b"ZORK"):
            return Verdict("Zork", confidence=0.9, metadata={{"tag": self.tag}})
        return None
def factory():
    return ZorkLayer()
class Broken:
    def __init__(self):
        raise OSError("libzork.so.1: cannot open shared object file")
"""


def loaded(name: str, value: str, tag: str) -> PluginSet:
    ps = PluginSet(Config(layer_settings={name: {"tag": tag}}), registry=ProtocolRegistry())
    ps.load_entry_points([ep(name, value)])
    return ps


def zork(ps: PluginSet) -> Any:
    """Classify a ZORK payload through the set's engine; the verdict."""
    from dpicore.api import synthetic_packets
    from dpicore.model import TCP

    with Classifier(plugins=ps, config=ps.config) as clf:
        return clf.classify_flow(synthetic_packets(b"ZORK hello", TCP, 40000, 9999, False)).verdict


def test_module_style_plugin_still_loads_and_is_shared(write_module) -> None:
    mod = write_module(MODULE_STYLE.format(id="zork"))
    first, second = loaded("zork", mod, "one"), loaded("zork", mod, "two")
    assert first.statuses["zork"].status == LOADED and second.statuses["zork"].status == LOADED
    assert first.plugin("zork") is sys.modules[mod] is second.plugin("zork")
    assert sys.modules[mod].SEEN == ["one", "two"], "one module, configured by both managers"
    assert zork(first).protocol == "Zork" and zork(second).protocol == "Zork"


@pytest.mark.parametrize("target", ["ZorkLayer", "factory"])
def test_class_or_factory_gives_each_manager_its_own_object(write_module, target: str) -> None:
    mod = write_module(CLASS_STYLE.format(id="zork"))
    first, second = loaded("zork", f"{mod}:{target}", "one"), loaded("zork", f"{mod}:{target}", "two")
    assert first.statuses["zork"].status == LOADED and second.statuses["zork"].status == LOADED
    assert len(sys.modules[mod].MADE) == 2
    assert first.plugin("zork") is not second.plugin("zork")
    assert zork(first).metadata == {"tag": "one"}
    assert zork(second).metadata == {"tag": "two"}


def test_a_constructor_that_raises_fails_that_plugin_only(write_module) -> None:
    mod = write_module(CLASS_STYLE.format(id="zork"))
    ps = PluginSet(Config(), registry=ProtocolRegistry())
    ps.load_entry_points([ep("broken", f"{mod}:Broken"), ep("zork", f"{mod}:ZorkLayer")])
    st = ps.statuses["broken"]
    assert st.status == FAILED
    assert st.reason == "instantiation failed: OSError: libzork.so.1: cannot open shared object file"
    assert ps.statuses["zork"].status == LOADED and [layer.id for layer in ps.layers] == ["zork"]
    ps.close()


def test_installed_layers_are_instances_per_classifier() -> None:
    """Our own layers' entry points name classes: two classifiers never share a layer object."""
    with Classifier(layers=["heuristics", "ml"]) as a, Classifier(layers=["heuristics", "ml"]) as b:
        for name in ("heuristics", "ml"):
            assert type(a.plugins.plugin(name)) is type(b.plugins.plugin(name))
            assert a.plugins.plugin(name) is not b.plugins.plugin(name)
