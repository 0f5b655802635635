"""The nDPI and ML layers let the engine hold back payload-less packets (``LayerInfo.hold_empty``):
they get a flow's handshake only when they are about to see payload (or, for ML, its last packet) or
the flow ends, and never when the heuristics layer names the flow first.  That must change no record:
checked on the whole shared corpus with the real libndpi and the shipped model, in first-verdict and
all-layers mode, against the same run with holding switched off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest

from dpicore import Classifier, Config
from dpicore.output import flow_record

pytestmark = pytest.mark.corpus


def _records(corpus: Path, hold: bool, all_layers: bool) -> list[str]:
    out: list[str] = []
    for path in sorted((corpus / "pcap").iterdir()):
        with Classifier(config=Config(enable=["heuristics", "ndpi", "ml"], all_layers=all_layers)) as clf:
            holding = [layer for layer in clf.engine.layers if layer.info.hold_empty]
            assert {layer.id for layer in holding} == {"ndpi", "ml"}
            if not hold:
                for layer in holding:
                    layer.info = attrs.evolve(layer.info, hold_empty=0)
            out.extend(json.dumps(flow_record(f, all_layers), sort_keys=True) for f in clf.classify_pcap(path))
    return sorted(out)


@pytest.mark.parametrize("all_layers", [False, True])
def test_holding_empty_packets_changes_no_record(corpus: Path, abi: Any, all_layers: bool) -> None:
    held = _records(corpus, True, all_layers)
    assert len(held) > 1000
    assert held == _records(corpus, False, all_layers)


def test_the_hold_is_within_ndpis_budget(abi: Any) -> None:
    # nDPI gives up after tcp_packets / udp_packets packets: holding more could move that give-up.
    with Classifier(config=Config(enable=["ndpi"], layer_settings={"ndpi": {"tcp_packets": 7, "udp_packets": 5}})) as clf:
        (ndpi,) = clf.engine.layers
        assert ndpi.info.hold_empty == 5
