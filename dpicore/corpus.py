"""Compare dpicore's flows with ndpiReader's per-flow labels.

The shared corpus (``../shared/corpus/ndpi``) holds, for each capture, the
flows ndpiReader 4.2 reported (``labels/NAME.json``).  Every accuracy test
and evaluation matches our flows to those the same way: by transport, VLAN
and the unordered pair of endpoints; when several flows share a key
(5-tuple reuse) they pair up in time order.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import attrs

from .model import TRANSPORT_NAMES, Flow, format_ip, transport_name
from .protocols import UNKNOWN, canonical

#: Where the shared corpus lives relative to a checkout; override with DPI_CORPUS.
DEFAULT_CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "ndpi"

LabelKey = tuple[str, int, tuple[str, int], tuple[str, int]]


def corpus_dir() -> Path | None:
    """The nDPI corpus directory, or None when it is not there (a user's clone)."""
    env = os.environ.get("DPI_CORPUS")
    path = Path(env) if env else DEFAULT_CORPUS
    return path if (path / "labels").is_dir() and (path / "pcap").is_dir() else None


@attrs.define(slots=True)
class LabelledFlow:
    """One flow as ndpiReader reported it."""

    key: LabelKey
    proto: str       # full Master.App label
    master: str
    app: str
    category: str
    confidence: str
    packets: int
    bytes: int
    host: str | None

    @property
    def protocol(self) -> str:
        """The protocol a port-independent classifier should name: the master, else the app."""
        name = self.master if self.master and self.master != UNKNOWN else self.app
        return canonical(name)


#: Transports ndpiReader names; any other it writes as its IP protocol number (AH is "51").
NDPI_NAMED = frozenset({"TCP", "UDP", "ICMP", "ICMPV6", "IGMP"})
_NUMBERS = {name: str(num) for num, name in TRANSPORT_NAMES.items()}


def _key(l4: str, a: str, ap: int, b: str, bp: int, vlan: int) -> LabelKey:
    x, y = sorted([(a, int(ap)), (b, int(bp))])
    l4 = l4.upper()
    if l4 not in NDPI_NAMED:
        l4 = _NUMBERS.get(l4, l4)
    return (l4, int(vlan), x, y)


def flow_key(flow: Flow) -> LabelKey:
    return _key(transport_name(flow.proto), format_ip(flow.client), flow.client_port, format_ip(flow.server),
                flow.server_port, flow.vlan)


def record_key(record: dict[str, Any]) -> LabelKey:
    return _key(record["transport"], record["src_ip"], record["src_port"], record["dst_ip"], record["dst_port"],
                record["vlan"])


def load_labels(path: str | Path) -> tuple[str, list[LabelledFlow]]:
    """(capture file name, flows) from one labels/NAME.json."""
    data = json.loads(Path(path).read_text())
    flows = [LabelledFlow(_key(f["l4"], f["src"], f["sport"], f["dst"], f["dport"], f.get("vlan", 0)),
                          f["proto"], f["master"], f["app"], f.get("category", ""), f.get("confidence", ""),
                          f.get("pkts", 0), f.get("bytes", 0), f.get("host"))
             for f in data["flows"]]
    return data["file"], flows


def captures(corpus: Path) -> Iterator[tuple[Path, list[LabelledFlow]]]:
    """(capture path, labelled flows) for every capture of the corpus, sorted by name."""
    for label_file in sorted((corpus / "labels").glob("*.json")):
        name, flows = load_labels(label_file)
        yield corpus / "pcap" / name, flows


def match(ours: Iterable[tuple[LabelKey, Any]], theirs: Iterable[LabelledFlow]
          ) -> tuple[list[tuple[Any, LabelledFlow]], list[Any], list[LabelledFlow]]:
    """Pair our items with labelled flows by key; returns (pairs, only ours, only theirs)."""
    pool: dict[LabelKey, list[LabelledFlow]] = defaultdict(list)
    for lf in theirs:
        pool[lf.key].append(lf)
    pairs: list[tuple[Any, LabelledFlow]] = []
    only_ours: list[Any] = []
    for key, item in ours:
        bucket = pool.get(key)
        if bucket:
            pairs.append((item, bucket.pop(0)))
        else:
            only_ours.append(item)
    only_theirs = [lf for bucket in pool.values() for lf in bucket]
    return pairs, only_ours, only_theirs
