"""What the layer answers for a flow, shared by the live layer, evaluation and training.

The forest always has a most likely class, even for a TCP or UDP flow whose
first packets carried no payload at all (a handshake, then silence, or a
capture that missed the data).  Such a flow shows the model nothing but
timing and flags, and on the corpus its "answer" was the majority class
(TLS) with high confidence; nDPI itself only names those flows by address or
port.  So they are not *observable*: training leaves them out and the layer
abstains on them.  Transports without ports (ICMP, IGMP, ESP, …) are named
by the transport number and stay observable.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dpicore import UNKNOWN
from dpicore.model import TCP, UDP

from .features import FlowSummary, has_payload, matrix, transport
from .model import Forest


def observable(summary: FlowSummary) -> bool:
    """False for a TCP/UDP flow with no payload in the packets the model sees."""
    return transport(summary) not in (TCP, UDP) or has_payload(summary)


def predict(forest: Forest, summaries: Sequence[FlowSummary]) -> tuple[list[str], np.ndarray]:
    """(answer, confidence) per flow; ``Unknown`` with confidence 0 for unobservable flows."""
    names = [UNKNOWN] * len(summaries)
    confidence = np.zeros(len(summaries))
    seen = [i for i, s in enumerate(summaries) if observable(s)]
    if seen:
        got, conf = forest.predict(matrix([summaries[i] for i in seen]))
        for i, name, c in zip(seen, got, conf):
            names[i] = name
            confidence[i] = c
    return names, confidence
