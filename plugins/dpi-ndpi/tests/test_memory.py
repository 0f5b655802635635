"""nDPI allocates inside every flow; the layer must give all of it back.

Classifying a TLS-heavy capture (reddit.pcap: 60 TLS flows, certificates
and SNIs) 200 times in one process must not grow the resident set by 2 MB.
Leaving out the release of that data (``ndpi_free_flow_data``, now inside
``ndpi_free_flow``) grew it by about 30 MB on the same run.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import pytest

from dpicore import Classifier

pytestmark = pytest.mark.corpus

CAPTURE = "reddit.pcap"
ROUNDS = 200
LIMIT = 2 * 1024 * 1024


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set from /proc")
def test_repeated_classification_does_not_leak(corpus: Path, abi: Any) -> None:
    path = corpus / "pcap" / CAPTURE
    with Classifier(layers=["ndpi"]) as clf:
        flows = list(clf.classify_pcap(path))
        assert sum(1 for f in flows if f.verdict and f.verdict.protocol == "TLS") >= 50
        for _ in range(20):  # warm-up: allocator pools, nDPI's caches, interned names
            list(clf.classify_pcap(path))
        gc.collect()
        before = rss()
        for _ in range(ROUNDS):
            for flow in clf.classify_pcap(path):
                pass
        gc.collect()
        grown = rss() - before
        live = clf.plugins.plugin("ndpi").detector.live
    print(f"RSS growth over {ROUNDS} rounds: {grown / 1e6:.3f} MB")
    assert live == 0, "flows still hold nDPI memory"
    assert grown < LIMIT, f"resident set grew by {grown / 1e6:.1f} MB"
