"""dpi-lpi: the libprotoident layer of dpicore.

libprotoident (WAND) names 500+ protocols from the first four payload bytes
of each direction, the first payload sizes, the ports and the transport.
This package binds the library the user installed through ctypes, without
libtrace: :mod:`.flowdata` fills ``lpi_data_t`` from dpicore packets,
:mod:`.binding` declares the C API, :mod:`.locate` finds the library,
:mod:`.plugin` holds the hooks.  See docs/lpi.md for installing libprotoident.
"""

from __future__ import annotations

__version__ = "0.1.0"
