"""Labelled flow summaries from captures: the training and evaluation data.

Features are collected by running the real dpicore engine over each capture
with :class:`Collector`, a plugin that sees exactly the packets the ML layer
sees (same ``wants_empty`` and packet budget, the same
:func:`~dpi_ml.features.add` into its summary), so training data and live
inference cannot drift apart.  The collector runs in all-layers mode, so no
other layer's early verdict cuts a flow short.

Labels come from, per capture:

* an ndpiReader label file next to the corpus layout (``../labels/NAME.json``,
  as in ``../shared/corpus/ndpi``), matched with :mod:`dpicore.corpus`;
* an ``expected.json`` in the capture's directory (the project's real-client
  captures: each payload-carrying flow is named by transport and server port);
* or another layer (``labels_from="ndpi"``): its verdict on the same flow, so
  users can retrain on their own traffic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import attrs

from dpicore import Classifier, Config, LayerInfo, UNKNOWN, hookimpl
from dpicore.corpus import LabelledFlow, flow_key, load_labels, match
from dpicore.model import Flow, Packet, transport_name
from dpicore.protocols import canonical

from .features import N_PACKETS, FlowSummary, add, has_payload, new_summary
from .model import MAX_CLASS_NAME, is_class_name

COLLECTOR_ID = "ml-collect"


class LabelError(ValueError):
    """A capture has no labels (and no labelling layer was given)."""


def observe(summary: FlowSummary, packet: Packet, direction: int) -> bool:
    """Feed one packet to a summary (shared by the layer and the collector); True when it is full."""
    return add(summary, packet.ts, direction, packet.payload_len, packet.tcp_flags, packet.payload)


class Collector:
    """A dpicore plugin that keeps every flow's summary (:data:`~dpi_ml.features.FlowSummary`) as the ML layer
    would build it."""

    def __init__(self) -> None:
        self.summaries: dict[Flow, FlowSummary] = {}

    @hookimpl
    def dpi_layer_info(self) -> LayerInfo:
        return LayerInfo(id=COLLECTOR_ID, priority=1000, max_packets=N_PACKETS, wants_empty=True, reads_payloads=False,
                         description="dpi-ml feature collector (training only)")

    @hookimpl
    def dpi_flow_new(self, flow: Flow) -> FlowSummary:
        return new_summary(flow.proto, flow.client_port, flow.server_port)

    @hookimpl
    def dpi_classify(self, packet: Packet, direction: int, state: FlowSummary) -> None:
        observe(state, packet, direction)

    @hookimpl
    def dpi_flow_end(self, flow: Flow, state: FlowSummary) -> None:
        self.summaries[flow] = state


@attrs.define(slots=True)
class Sample:
    """One flow: where it came from, what it looked like, what it is."""

    capture: str
    flow: Flow
    summary: FlowSummary
    label: str


def _corpus_labels(pcap: Path) -> list[LabelledFlow] | None:
    path = pcap.parent.parent / "labels" / f"{pcap.name}.json"
    if not path.is_file():
        return None
    try:
        flows = load_labels(path)[1]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LabelError(f"{path}: not an ndpiReader label file ({type(exc).__name__}: {exc})") from None
    for lf in flows:  # as expected.json's: a model with such a class could not be loaded again
        if not is_class_name(lf.protocol):
            raise LabelError(f"{path}: protocol {lf.protocol[:80]!r} is not a printable name of "
                             f"1-{MAX_CLASS_NAME} characters")
    return flows


def _expected_entry(pcap: Path) -> dict[str, Any] | None:
    path = pcap.parent / "expected.json"
    if not path.is_file():
        return None
    try:
        captures = json.loads(path.read_text(encoding="utf-8")).get("captures", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise LabelError(f"{path}: not an expected.json ({type(exc).__name__}: {exc})") from None
    if not isinstance(captures, dict) or not all(isinstance(e, dict) for e in captures.values()):
        raise LabelError(f"{path}: 'captures' must map capture names to objects")
    for name, entry in captures.items():
        if name == pcap.name.split(".")[0] or Path(str(entry.get("file", ""))).name == pcap.name:
            try:
                _expected_rules(entry)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                raise LabelError(f"{path}: entry {name!r}: each flow needs transport, port (or ports) and "
                                 f"protocol ({type(exc).__name__}: {exc})") from None
            return entry
    return None


def _label_corpus(flows: list[Flow], labels: list[LabelledFlow]) -> Iterator[tuple[Flow, str]]:
    pairs, _, _ = match(((flow_key(f), f) for f in flows), labels)
    for flow, lf in pairs:
        yield flow, lf.protocol


def _expected_rules(entry: dict[str, Any]) -> list[tuple[str, int, int, str]]:
    """(transport, lowest, highest server port, protocol) per entry; ``port`` or a ``ports`` range."""
    rules = []
    for f in entry.get("flows", []):
        lo, hi = (f["ports"][0], f["ports"][-1]) if "ports" in f else (f["port"], f["port"])
        label = canonical(str(f["protocol"]))
        if not is_class_name(label):
            raise ValueError(f"protocol {label!r} is not a printable name of 1-{MAX_CLASS_NAME} characters")
        rules.append((str(f["transport"]).upper(), int(lo), int(hi), label))
    return rules


def _label_expected(flows: list[Flow], entry: dict[str, Any], summaries: dict[Flow, FlowSummary]
                    ) -> Iterator[tuple[Flow, str]]:
    rules = _expected_rules(entry)
    for flow in flows:
        summary = summaries.get(flow)
        if summary is None or not has_payload(summary):
            continue  # expected.json names payload-carrying flows only
        transport = transport_name(flow.proto)
        for t, lo, hi, label in rules:
            if t == transport and lo <= flow.server_port <= hi:
                yield flow, label
                break


def layer_verdict(flow: Flow, layer: str, threshold: float = 0.5) -> str:
    """What ``layer`` named ``flow`` (all-layers mode), ``Unknown`` unless confident."""
    for v in flow.verdicts:
        if v.source == layer and v.protocol != UNKNOWN and v.confidence >= threshold:
            return v.protocol
    return UNKNOWN


def collect(pcaps: Iterable[Path], labels_from: str | None = None, config: Config | None = None,
            on_file: Callable[[Path, int, list[str]], None] | None = None,
            also: Sequence[str] = ()) -> list[Sample]:
    """Labelled samples for every flow of ``pcaps`` that has a label.

    Without ``labels_from`` each capture must have corpus labels or an
    ``expected.json`` entry (:class:`LabelError` otherwise, raised before any
    capture is read); flows the labels do not mention are left out.  With
    ``labels_from`` every flow is kept, labelled with that layer's verdict
    (``Unknown`` when it had none).  ``on_file`` hears, per capture, how many
    samples it gave and what damage its reader reported.
    """
    pcaps = [Path(p) for p in pcaps]
    sources: list[tuple[list[LabelledFlow] | None, dict[str, Any] | None]] = []
    for pcap in pcaps:
        corpus = expected = None
        if labels_from is None:
            corpus = _corpus_labels(pcap)
            expected = None if corpus is not None else _expected_entry(pcap)
            if corpus is None and expected is None:
                raise LabelError(f"{pcap}: no labels (no ../labels/{pcap.name}.json, no expected.json entry); "
                                 "label it with another layer: --labels-from LAYER")
        sources.append((corpus, expected))
    samples: list[Sample] = []
    collector = Collector()
    layers = list(dict.fromkeys([COLLECTOR_ID, *([labels_from] if labels_from else []), *also]))
    with Classifier(config=config, layers=layers, all_layers=True,
                    extra_plugins=[(COLLECTOR_ID, collector)]) as clf:
        for pcap, (corpus, expected) in zip(pcaps, sources):
            collector.summaries.clear()
            flows = list(clf.classify_pcap(pcap))
            if labels_from is not None:
                pairs: Iterable[tuple[Flow, str]] = ((f, layer_verdict(f, labels_from, clf.config.threshold))
                                                     for f in flows)
            elif corpus is not None:
                pairs = _label_corpus(flows, corpus)
            else:
                assert expected is not None
                pairs = _label_expected(flows, expected, collector.summaries)
            before = len(samples)
            # In the order the flows began, not the order they ended: when a flow ends (timeouts, a
            # capture whose clock goes back) must not change the training set's order, and so the model.
            for flow, label in sorted(pairs, key=lambda pair: pair[0].number):
                summary = collector.summaries.get(flow)
                if summary is not None:
                    samples.append(Sample(pcap.name, flow, summary, label))
            if on_file is not None:
                source = clf.last_source
                on_file(pcap, len(samples) - before, list(source.problems) if source is not None else [])
    return samples
