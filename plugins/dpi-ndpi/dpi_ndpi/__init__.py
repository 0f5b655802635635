"""dpi-ndpi: a dpicore layer that runs the system's nDPI (libndpi 4.2) through ctypes.

No nDPI code is vendored: the layer loads Debian's ``libndpi.so.4.2``, checks
its API version, and feeds it each flow's packets the way ndpiReader does, so
its answers match ndpiReader's.  Everything that depends on the nDPI release
lives in :mod:`dpi_ndpi.abi42`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .detector import Detector, NdpiFlow, NdpiResult
from .library import NdpiError, NdpiUnavailable, NdpiUnsupported, load

__all__ = ["Detector", "NdpiError", "NdpiFlow", "NdpiResult", "NdpiUnavailable", "NdpiUnsupported", "__version__",
           "load"]
