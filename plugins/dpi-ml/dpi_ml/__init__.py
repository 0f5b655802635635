"""dpi-ml: a dpicore layer that names a flow's protocol from the shape of its first packets.

The layer (:mod:`dpi_ml.plugin`) needs only numpy: the shipped model is a
forest of decision trees stored as plain arrays (:mod:`dpi_ml.model`), never a
pickle.  Training and evaluation (:mod:`dpi_ml.train`, ``dpi-ml`` / ``dpi ml``)
use scikit-learn and matplotlib, installed with the ``train`` extra.
"""

from __future__ import annotations

__version__ = "0.1.0"
