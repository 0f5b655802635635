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
(returns None) rather than guess.  Since it predicts at the N-th packet at
the earliest, the engine may hold back the payload-less ones among the first
N - 1 packets (``hold_empty``): a flow another layer names first never costs
it their calls.

The entry point names :class:`MlLayer`: the core makes one per plugin
manager, so every classifier has its own model and threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpicore import UNKNOWN, LayerInfo, Verdict, hookimpl
from dpicore.model import Flow, Packet
from dpicore.plugins import check_settings

from .dataset import observe
from .features import N_PACKETS, FlowSummary, is_done, mark_done, new_summary
from .model import Forest, load
from .predict import predict

LAYER_ID = "ml"
DEFAULT_PRIORITY = 40
#: The model trained on the shared corpus and the project's real-client captures (docs/ml.md).
DEFAULT_MODEL = Path(__file__).resolve().parent / "data" / "model.npz"

#: dpi_flow_end reasons for which the layer has nothing to say: it answered, another layer did, or it failed.
_SILENT = frozenset({"verdict", "decided", "error"})

#: Models by (file, mtime, size), shared read-only by every instance of the layer.
_cache: dict[tuple[str, int, int], Forest] = {}


def _load(path: Path) -> Forest:
    """Load a model once per (file, mtime, size): every Classifier configures the layer anew.

    A loaded :class:`~dpi_ml.model.Forest` is never modified, so instances
    share it; only the choice of model and threshold is per instance.
    """
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        return load(path)  # raises the clear ModelError
    forest = _cache.get(key)
    if forest is None:
        forest = _cache[key] = load(path)
    return forest


#: What ``[layers.ml]`` may set (priority is read by the core).
SETTINGS = ("model", "threshold", "priority")


def threshold_setting(config: dict[str, Any], model: Forest) -> float:
    threshold = config.get("threshold", model.threshold_default)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"layers.ml.threshold must be a number between 0 and 1, not {threshold!r}")
    return float(threshold)


class MlLayer:
    """The layer as one object per plugin manager (the entry point names this class).

    Each :class:`dpicore.Classifier` gets its own instance, so classifiers
    with different models or thresholds run side by side in one process.
    """

    def __init__(self) -> None:
        self._model: Forest | None = None
        self.threshold = 0.5

    @property
    def model(self) -> Forest:
        """The configured model (the shipped one when the layer was never configured)."""
        if self._model is None:
            self._model = _load(DEFAULT_MODEL)
        return self._model

    @hookimpl
    def dpi_configure(self, config: dict[str, Any]) -> None:
        check_settings(LAYER_ID, config, SETTINGS)  # a misspelt "model" ran the shipped model in silence
        path = Path(str(config.get("model", DEFAULT_MODEL))).expanduser()
        model = _load(path)
        self.threshold = threshold_setting(config, model)
        self._model = model

    @hookimpl
    def dpi_unconfigure(self) -> None:
        self._model = None

    @hookimpl
    def dpi_layer_info(self) -> LayerInfo:
        return LayerInfo(id=LAYER_ID, priority=DEFAULT_PRIORITY,
                         protocols=tuple(c for c in self.model.classes if c != UNKNOWN),
                         max_packets=N_PACKETS, wants_empty=True, hold_empty=N_PACKETS - 1,
                         reads_payloads=False,
                         description=f"trained flow classifier (first {N_PACKETS} packets' shape and first bytes)")

    @hookimpl
    def dpi_flow_new(self, flow: Flow) -> FlowSummary:
        return new_summary(flow.proto, flow.client_port, flow.server_port)

    @hookimpl
    def dpi_classify(self, packet: Packet, direction: int, state: FlowSummary) -> Verdict | None:
        if observe(state, packet, direction):
            return self.answer(state)
        return None

    @hookimpl
    def dpi_flow_end(self, state: FlowSummary, reason: str) -> Verdict | None:
        if is_done(state) or reason in _SILENT:
            return None
        return self.answer(state)

    def answer(self, state: FlowSummary) -> Verdict | None:
        """Predict a flow once; None when unsure (below the threshold) or when the best guess is Unknown."""
        mark_done(state)
        names, confidence = predict(self.model, [state])
        name, conf = names[0], float(confidence[0])
        if name == UNKNOWN or conf < self.threshold:
            return None
        return Verdict(name, LAYER_ID, conf)
