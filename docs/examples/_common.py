"""Where the examples find their capture: the first argument, or the bundled sample."""

import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.pcap"


def capture_path() -> Path:
    return Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLE
