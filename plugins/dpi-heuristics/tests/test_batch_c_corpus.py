"""Batch C heuristics on the nDPI corpus: real flows, compared with ndpiReader's labels.

* every flow nDPI labels with a batch-C protocol gets that protocol from the
  heuristics layer (the whole layer, through the engine, so other batches'
  heuristics compete for the same flows);
* the first payloads of every flow nDPI labels with *another* protocol of
  issue 3 (TLS, QUIC, RTP, STUN, HTTP, ...) are claimed by no batch-C
  heuristic: DNS-, NTP- and RPC-like structure is easy to over-match;
* seeded random datagrams and segments are claimed by none of them either.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from dpicore import Classifier
from dpicore.corpus import _key, captures, flow_key, match
from dpicore.decode import CaptureSource
from dpicore.model import TCP, UDP, format_ip, transport_name
from dpicore.protocols import UNKNOWN

from dpi_heuristics.corpus_eval import ISSUE_PROTOCOLS
from dpi_heuristics.dispatch import Dispatcher
from dpi_heuristics.protocols import all_heuristics
from dpi_heuristics.testing import classify, make_flow

BATCH_C = frozenset({"DNS", "MDNS", "LLMNR", "NetBIOS", "SMB", "RDP", "DCERPC", "NTP", "DHCP", "DHCPv6", "SNMP",
                     "Syslog", "TFTP", "SSDP", "NFS", "ICMP"})
MINE = [h for h in all_heuristics() if h.name in BATCH_C]

pytestmark = pytest.mark.corpus


@pytest.fixture(scope="module")
def outcomes(corpus: Path) -> list[tuple[str, str, str]]:
    """(capture, nDPI's protocol, ours) for every matched flow of the captures holding a batch-C protocol."""
    out = []
    with Classifier(layers=["heuristics"]) as clf:
        for path, labels in captures(corpus):
            if not any(lf.protocol in BATCH_C for lf in labels):
                continue
            flows = list(clf.classify_pcap(path))
            pairs, _, _ = match(((flow_key(f), f) for f in flows), labels)
            for flow, label in pairs:
                ours = flow.verdict.protocol if flow.verdict is not None else UNKNOWN
                out.append((path.name, label.protocol, ours))
    return out


def test_every_batch_c_flow_gets_ndpis_protocol(outcomes: list[tuple[str, str, str]]) -> None:
    total: Counter[str] = Counter()
    misses = []
    for capture, theirs, ours in outcomes:
        if theirs in BATCH_C:
            total[theirs] += 1
            if ours != theirs:
                misses.append(f"{capture}: nDPI {theirs}, ours {ours}")
    # Every protocol of the batch that the corpus holds is there (SMB has no TCP flow in it).
    assert set(total) == BATCH_C - {"SMB"}, total
    assert sum(total.values()) >= 190
    assert not misses, "\n".join(misses)


def test_batch_c_names_contradict_no_ndpi_label(outcomes: list[tuple[str, str, str]]) -> None:
    wrong = [f"{c}: nDPI {t}, ours {o}" for c, t, o in outcomes
             if o in BATCH_C and o != t and t in ISSUE_PROTOCOLS]
    assert not wrong, "\n".join(wrong)


def _foreign_flows(corpus: Path) -> list[tuple[str, str, int, dict, list[tuple[int, bytes]]]]:
    """(capture, nDPI protocol, transport, flow endpoints, first payloads) of flows labelled with an issue-3
    protocol outside batch C."""
    out = []
    for path, labels in captures(corpus):
        wanted = {lf.key: lf.protocol for lf in labels
                  if lf.protocol in ISSUE_PROTOCOLS and lf.protocol not in BATCH_C}
        if not wanted:
            continue
        flows: dict = {}
        for p in CaptureSource(path):
            key = _key(transport_name(p.proto), format_ip(p.src), p.sport, format_ip(p.dst), p.dport, p.vlan)
            if key not in wanted:
                continue
            if key not in flows:
                flows[key] = ({"client": p.src, "client_port": p.sport, "server": p.dst, "server_port": p.dport},
                              p.proto, [])
            ends, proto, payloads = flows[key]
            if p.payload and len(payloads) < 6:
                payloads.append((0 if (p.src, p.sport) == (ends["client"], ends["client_port"]) else 1,
                                 bytes(p.payload)))
        out += [(path.name, wanted[k], proto, ends, payloads) for k, (ends, proto, payloads) in flows.items()
                if payloads and proto in (TCP, UDP)]
    return out


def test_no_batch_c_heuristic_claims_other_protocols_flows(corpus: Path) -> None:
    flows = _foreign_flows(corpus)
    kinds = Counter(proto for _, proto, _, _, _ in flows)
    assert len(flows) >= 300 and {"TLS", "QUIC", "RTP", "STUN", "HTTP"} <= set(kinds), kinds
    claims = []
    dispatcher = Dispatcher(MINE)
    for capture, theirs, transport, ends, payloads in flows:
        v = classify(payloads, transport, dispatcher=dispatcher, flow=make_flow(transport, **ends))
        if v is not None:
            claims.append(f"{capture}: nDPI {theirs}, batch C says {v.protocol} ({v.confidence})")
    assert not claims, "\n".join(claims)


def test_random_payloads_are_not_claimed() -> None:
    """3000 seeded random payloads per transport, lengths 1-600 (and 48: NTP's size), no verdict or guess."""
    rng = random.Random(20240601)
    claims: defaultdict[str, int] = defaultdict(int)
    dispatcher = Dispatcher(MINE)
    for transport in (UDP, TCP):
        for i in range(3000):
            n = 48 if i % 10 == 0 else rng.randint(1, 600)
            payload = rng.randbytes(n)
            v = classify([(0, payload)], transport, dispatcher=dispatcher,
                         flow=make_flow(transport, client_port=rng.randint(1024, 65535),
                                        server_port=rng.randint(1, 65535)))
            if v is not None:
                claims[f"{transport}:{v.protocol}"] += 1
    assert not claims, dict(claims)
