"""The dpicore hooks of the ML layer.

Configuration (``[layers.ml]``)::

    model = "/path/to/model.npz"   # default: the model shipped in this package
    threshold = 0.9                # abstain below this calibrated confidence (default: the model's)
    priority = 40                  # after heuristics (10) and nDPI (20)

The layer asks for every packet (``wants_empty``) up to
:data:`dpi_ml.features.N_PACKETS` per flow and only records a few numbers
per packet; it predicts once per flow, when the flow has that many packets or
ends earlier, and never for a flow another layer already decided.  Below the
threshold, when the most likely class is ``Unknown``, or when a TCP/UDP flow
showed no payload at all (:func:`dpi_ml.predict.observable`), it abstains
(returns None) rather than guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpicore import UNKNOWN, LayerInfo, Verdict, hookimpl
from dpicore.model import Flow, Packet

from .dataset import observe
from .features import N_PACKETS, FlowSummary
from .model import Forest, load
from .predict import predict

LAYER_ID = "ml"
DEFAULT_PRIORITY = 40
#: The model trained on the shared corpus and the project's real-client captures (docs/ml.md).
DEFAULT_MODEL = Path(__file__).resolve().parent / "data" / "model.npz"

#: dpi_flow_end reasons for which the layer has nothing to say: it answered, another layer did, or it failed.
_SILENT = frozenset({"verdict", "decided", "error"})

_model: Forest | None = None
_threshold = 0.5
_cache: dict[tuple[str, int, int], Forest] = {}


def _load(path: Path) -> Forest:
    """Load a model once per (file, mtime, size): every Classifier configures the layer anew."""
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        return load(path)  # raises the clear ModelError
    forest = _cache.get(key)
    if forest is None:
        forest = _cache[key] = load(path)
    return forest


@hookimpl
def dpi_configure(config: dict[str, Any]) -> None:
    global _model, _threshold
    path = Path(str(config.get("model", DEFAULT_MODEL))).expanduser()
    model = _load(path)
    threshold = config.get("threshold", model.threshold_default)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"layers.ml.threshold must be a number between 0 and 1, not {threshold!r}")
    _model, _threshold = model, float(threshold)


@hookimpl
def dpi_unconfigure() -> None:
    global _model
    _model = None


def model() -> Forest:
    global _model
    if _model is None:
        _model = _load(DEFAULT_MODEL)
    return _model


@hookimpl
def dpi_layer_info() -> LayerInfo:
    return LayerInfo(id=LAYER_ID, priority=DEFAULT_PRIORITY,
                     protocols=tuple(c for c in model().classes if c != UNKNOWN),
                     max_packets=N_PACKETS, wants_empty=True,
                     description=f"trained flow classifier (first {N_PACKETS} packets' shape and first bytes)")


@hookimpl
def dpi_flow_new(flow: Flow) -> FlowSummary:
    return FlowSummary(flow.proto, flow.client_port, flow.server_port)


@hookimpl
def dpi_classify(packet: Packet, direction: int, state: FlowSummary) -> Verdict | None:
    if observe(state, packet, direction):
        return answer(state)
    return None


@hookimpl
def dpi_flow_end(state: FlowSummary, reason: str) -> Verdict | None:
    if state.done or reason in _SILENT:
        return None
    return answer(state)


def answer(state: FlowSummary, threshold: float | None = None) -> Verdict | None:
    """Predict a flow once; None when unsure (below the threshold) or when the best guess is Unknown."""
    state.done = True
    names, confidence = predict(model(), [state])
    name, conf = names[0], float(confidence[0])
    if name == UNKNOWN or conf < (_threshold if threshold is None else threshold):
        return None
    return Verdict(name, LAYER_ID, conf)
