"""The nDPI layer alone against ndpiReader 4.2's labels of the whole shared corpus.

Each capture gets its own :class:`Classifier` (its own nDPI module), as each
ndpiReader run had: nDPI's caches (``DPI (cache)`` answers, BitTorrent and
STUN correlation) are per module.  Flows are paired with the labels by
:mod:`dpicore.corpus`; only flows both sides report are compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dpicore import Classifier
from dpicore.corpus import captures, flow_key, match

pytestmark = pytest.mark.corpus

#: The acceptance bar: same label on at least this share of the flows both report.
REQUIRED = 0.995


@pytest.fixture(scope="module")
def compared(corpus: Path, abi: Any) -> list[tuple[str, Any, Any]]:
    """(capture name, our flow, ndpiReader's labelled flow) for every flow both report."""
    out: list[tuple[str, Any, Any]] = []
    for path, labels in captures(corpus):
        with Classifier(layers=["ndpi"]) as clf:
            flows = list(clf.classify_pcap(path))
        pairs, _, _ = match(((flow_key(f), f) for f in flows), labels)
        out.extend((path.name, ours, theirs) for ours, theirs in pairs)
    return out


def _report(what: str, misses: list[str], total: int) -> str:
    return f"{what}: {total - len(misses)}/{total} agree; differences:\n" + "\n".join(misses[:40])


def test_every_capture_was_compared(compared: list[tuple[str, Any, Any]], corpus: Path) -> None:
    assert len({name for name, _, _ in compared}) == len(list((corpus / "labels").glob("*.json")))
    assert len(compared) >= 950


def test_full_ndpi_label_matches_ndpireader(compared: list[tuple[str, Any, Any]]) -> None:
    misses = [f"{name} {theirs.key}: ndpiReader {theirs.proto!r}, layer "
              f"{ours.verdict.metadata.get('ndpi_label') if ours.verdict else None!r}"
              for name, ours, theirs in compared
              if ours.verdict is None or ours.verdict.metadata.get("ndpi_label") != theirs.proto]
    share = 1 - len(misses) / len(compared)
    print(_report("Master.App label", misses, len(compared)))
    assert share >= REQUIRED, _report("Master.App label", misses, len(compared))


def test_canonical_protocol_matches_ndpireader(compared: list[tuple[str, Any, Any]]) -> None:
    misses = [f"{name} {theirs.key}: ndpiReader {theirs.protocol!r}, layer "
              f"{ours.verdict.protocol if ours.verdict else None!r}"
              for name, ours, theirs in compared
              if (ours.verdict.protocol if ours.verdict else "Unknown") != theirs.protocol]
    share = 1 - len(misses) / len(compared)
    print(_report("canonical protocol", misses, len(compared)))
    assert share >= REQUIRED, _report("canonical protocol", misses, len(compared))


def test_confidence_and_host_match_ndpireader(compared: list[tuple[str, Any, Any]]) -> None:
    """nDPI's confidence name, and the host/SNI wherever ndpiReader reports one.

    SSH flows are left out of the host check: the labeller reads SSH banners
    from ``protos.ssh``, which this layer does not read.
    """
    conf = [f"{n} {t.key}: {t.confidence!r} vs {o.verdict.metadata.get('ndpi_confidence')!r}"
            for n, o, t in compared if o.verdict is None or o.verdict.metadata.get("ndpi_confidence") != t.confidence]
    hosts = [(n, o, t) for n, o, t in compared if t.host and not t.proto.startswith("SSH")]
    host_misses = [f"{n} {t.key}: {t.host!r} vs {o.verdict.metadata.get('host')!r}"
                   for n, o, t in hosts if o.verdict is None or o.verdict.metadata.get("host") != t.host]
    assert len(hosts) > 300
    assert 1 - len(conf) / len(compared) >= REQUIRED, _report("confidence", conf, len(compared))
    assert 1 - len(host_misses) / len(hosts) >= REQUIRED, _report("host", host_misses, len(hosts))
