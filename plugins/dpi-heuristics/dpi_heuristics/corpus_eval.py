"""Agreement of the heuristics layer with ndpiReader's labels on the nDPI corpus.

Shared by the acceptance test (``tests/test_corpus_accuracy.py``) and
``benchmarks/heuristics_accuracy.py`` so both print the same numbers.

Two figures, as issue 3 defines them:

* **recall**: among matched flows whose nDPI label (master protocol, else the
  app protocol, canonicalised) is one of :data:`ISSUE_PROTOCOLS`, the share
  the heuristics layer alone names with the same canonical protocol; also
  given for the flows that carried at least one payload byte, because nDPI
  names payload-less flows by port or address ("Match by port/IP"), which a
  payload heuristic must not do;
* **contradictions**: among *all* matched flows, the share where we name a
  protocol X and nDPI names a different protocol Y of :data:`ISSUE_PROTOCOLS`
  (naming a protocol for a flow nDPI leaves Unknown or names outside the list
  is not a contradiction: nDPI knows hundreds of names we do not).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

import attrs
from dpicore import Classifier
from dpicore.corpus import LabelKey, LabelledFlow, captures, flow_key, match
from dpicore.decode import CaptureSource
from dpicore.model import Flow, FlowKey, Packet
from dpicore.protocols import UNKNOWN, canonical

#: Canonical names of every protocol issue 3 lists (the denominator of the recall figure).
ISSUE_PROTOCOLS: frozenset[str] = frozenset(canonical(n) for n in (
    "HTTP", "HTTP2", "WebSocket", "TLS", "DTLS", "QUIC", "DNS", "MDNS", "LLMNR", "SSH", "SMTP", "POP3",
    "IMAP", "FTP", "FTP_DATA", "SMB", "NetBIOS", "RDP", "DCERPC", "MQTT", "SIP", "RTP", "RTCP", "STUN",
    "NTP", "DHCP", "DHCPv6", "SNMP", "Syslog", "TFTP", "Telnet", "MySQL", "PostgreSQL", "Redis",
    "MongoDB", "Memcached", "XMPP", "IRC", "LDAP", "Kerberos", "RTSP", "BitTorrent", "SOCKS", "OpenVPN",
    "WireGuard", "IPsec", "SSDP", "NFS", "Modbus", "AMQP", "Git", "VNC", "Rsync", "BGP", "MSSQL", "ICMP",
))


@attrs.define(slots=True)
class Outcome:
    """One matched flow: what nDPI said, what we said."""

    capture: str
    label: LabelledFlow
    ours: str
    confidence: float
    #: The flow carried at least one payload byte (without any, no payload heuristic can answer).
    payload: bool = True

    @property
    def expected(self) -> str:
        return self.label.protocol

    def describe(self) -> str:
        (l4, _vlan, a, b) = self.label.key
        return (f"{self.capture}: {l4} {a[0]}:{a[1]} <-> {b[0]}:{b[1]} nDPI={self.label.proto!r} "
                f"({self.label.confidence}) -> {self.expected}, ours={self.ours} ({self.confidence:.2f}), "
                f"{self.label.packets} pkts{'' if self.payload else ', no payload'}")


@attrs.define(slots=True)
class Report:
    outcomes: list[Outcome] = attrs.field(factory=list)
    unmatched_ours: int = 0
    unmatched_theirs: int = 0

    @property
    def in_scope(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.expected in ISSUE_PROTOCOLS]

    @property
    def misses(self) -> list[Outcome]:
        return [o for o in self.in_scope if o.ours != o.expected]

    @property
    def contradictions(self) -> list[Outcome]:
        return [o for o in self.outcomes
                if o.ours != UNKNOWN and o.expected in ISSUE_PROTOCOLS and o.ours != o.expected]

    @property
    def recall(self) -> float:
        scope = self.in_scope
        return 1.0 - len(self.misses) / len(scope) if scope else 0.0

    @property
    def payload_recall(self) -> float:
        """(a) restricted to flows that carried payload: what a payload heuristic can possibly name."""
        scope = [o for o in self.in_scope if o.payload]
        hits = sum(o.ours == o.expected for o in scope)
        return hits / len(scope) if scope else 0.0

    @property
    def contradiction_rate(self) -> float:
        return len(self.contradictions) / len(self.outcomes) if self.outcomes else 0.0

    def per_protocol(self) -> dict[str, tuple[int, int]]:
        """protocol -> (flows nDPI labels so, of which we name the same)."""
        total: Counter[str] = Counter()
        hit: Counter[str] = Counter()
        for o in self.in_scope:
            total[o.expected] += 1
            hit[o.expected] += o.ours == o.expected
        return {p: (total[p], hit[p]) for p in sorted(total)}

    def summary(self) -> str:
        scope = self.in_scope
        lines = [
            f"matched flows: {len(self.outcomes)} (unmatched: ours {self.unmatched_ours}, "
            f"nDPI {self.unmatched_theirs})",
            f"(a) same protocol as nDPI, flows labelled with an issue-3 protocol: "
            f"{len(scope) - len(self.misses)}/{len(scope)} = {self.recall:.2%}",
            f"    the same among those that carried payload: "
            f"{sum(o.ours == o.expected for o in scope if o.payload)}/{sum(o.payload for o in scope)} = "
            f"{self.payload_recall:.2%}",
            f"(b) contradicting nDPI, all matched flows: "
            f"{len(self.contradictions)}/{len(self.outcomes)} = {self.contradiction_rate:.2%}",
            "per protocol (nDPI flows, same name):",
            "  " + ", ".join(f"{p} {h}/{t}" for p, (t, h) in self.per_protocol().items()),
            f"    at most {sum(o.payload for o in scope)}/{len(scope)} = "
            f"{sum(o.payload for o in scope) / max(1, len(scope)):.2%} can be named from payload: the others "
            f"never carried a byte",
            f"misses without any payload: {sum(not o.payload for o in self.misses)}; misses where nDPI "
            f"guessed by port or address: {sum(_guessed(o) for o in self.misses)}",
            "misses:",
        ]
        lines += ["  " + o.describe() for o in self.misses] or ["  none"]
        lines.append("contradictions:")
        lines += ["  " + o.describe() for o in self.contradictions] or ["  none"]
        return "\n".join(lines)


def _guessed(outcome: Outcome) -> bool:
    """nDPI's label came from a port or address guess, not from the payload ("Match by port"/"by IP")."""
    return outcome.label.confidence.lower().startswith("match by")


def _payload_spans(packets: Iterable[Packet]) -> dict[FlowKey, list[float]]:
    """Per flow key, the timestamps of packets that carried payload (a reused key spans several flows)."""
    spans: dict[FlowKey, list[float]] = defaultdict(list)
    for p in packets:
        if p.payload_len:
            spans[FlowKey.of(p)].append(p.ts)
    return spans


def evaluate(corpus: Path, layers: Iterable[str] = ("heuristics",)) -> Report:
    """Classify every corpus capture with ``layers`` only and compare with the labels."""
    report = Report()
    with Classifier(layers=list(layers)) as clf:
        for path, labels in captures(corpus):
            spans = _payload_spans(CaptureSource(path))
            groups, rest = _spanned(list(clf.classify_pcap(path)), labels)
            pairs, only_ours, only_theirs = match(((flow_key(f), f) for f in rest),
                                                  [lf for lf in labels if lf.key not in groups])
            report.unmatched_ours += len(only_ours)
            report.unmatched_theirs += len(only_theirs)
            for group, label in [([f], lf) for f, lf in pairs] + [(g, lf) for lf, g in groups.values()]:
                verdict = next((f.verdict for f in group if f.verdict is not None
                                and f.verdict.protocol != UNKNOWN), group[0].verdict)
                ours = canonical(verdict.protocol) if verdict is not None else UNKNOWN
                conf = verdict.confidence if verdict is not None else 0.0
                carried = any(f.first_seen <= ts <= f.last_seen for f in group for ts in spans.get(f.key, ()))
                report.outcomes.append(Outcome(path.name, label, ours, conf, carried))
    return report


def _spanned(flows: list[Flow], labels: list[LabelledFlow]
             ) -> tuple[dict[LabelKey, tuple[LabelledFlow, list[Flow]]], list[Flow]]:
    """Keys where nDPI reports one flow and we several whose packets add up to its count: we ended a flow
    (RST, FIN, timeout) and a new one began on the same 5-tuple, nDPI kept one.  Its label is compared
    with what one flow spanning them all would have been named, the first verdict that names a protocol
    (pairing it with our first flow alone, often a refused SYN, would count a miss no layer could avoid).
    Returns {key: (label, our flows in time order)} and the flows left for :func:`match`."""
    ours: dict[LabelKey, list[Flow]] = defaultdict(list)
    for f in flows:
        ours[flow_key(f)].append(f)
    count = Counter(lf.key for lf in labels)
    alone = {lf.key: lf for lf in labels if count[lf.key] == 1}
    groups = {key: (alone[key], sorted(fs, key=lambda f: f.first_seen)) for key, fs in ours.items()
              if len(fs) > 1 and key in alone and sum(f.packets for f in fs) == alone[key].packets}
    return groups, [f for f in flows if flow_key(f) not in groups]
