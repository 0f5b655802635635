"""dpi-heuristics: the fast first layer of dpicore, port-independent payload heuristics."""

__version__ = "0.1.0"
