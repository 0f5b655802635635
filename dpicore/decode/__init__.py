"""Decoding: capture files → frames → packets."""

from .capture import CaptureError, CaptureReader, Frame, is_capture, read_frames
from .packets import DecodeError, Decoder, Malformed, Truncated, UnsupportedLinkType, LINKTYPE_NAMES
from .source import CaptureSource, packets_from_pcap

__all__ = [
    "CaptureError", "CaptureReader", "CaptureSource", "DecodeError", "Decoder", "Frame", "LINKTYPE_NAMES",
    "Malformed", "Truncated", "UnsupportedLinkType", "is_capture", "packets_from_pcap", "read_frames",
]
