"""Agreement of the heuristics layer with ndpiReader 4.2's labels on the nDPI corpus.

    .venv/bin/python benchmarks/heuristics_accuracy.py [--corpus DIR]

Prints issue 3's two figures (the same computation as
plugins/dpi-heuristics/tests/test_corpus_accuracy.py): (a) the share of
flows labelled with an issue-3 protocol that we name the same, (b) the
share of all matched flows where we contradict nDPI; then the per-protocol
counts, every miss and every contradiction.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dpicore.corpus import corpus_dir

from dpi_heuristics.corpus_eval import evaluate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help="the nDPI corpus (default: ../shared/corpus/ndpi)")
    args = parser.parse_args()
    corpus = args.corpus or corpus_dir()
    if corpus is None:
        sys.exit("the nDPI corpus (../shared/corpus/ndpi) is absent: pass --corpus")
    print(evaluate(corpus).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
