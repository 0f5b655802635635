"""The project's own real-client captures get the protocol their script ran.

tests/captures/realclients/*.pcap and samples/sample.pcap were recorded by
scripts/make_captures.py with tcpdump on loopback while real clients talked
to real servers (curl, dig, ssh, openssl, redis-cli, psql, ... against
http.server, dnsmasq, sshd, s_server, redis-server, postgres, ...), several on
non-standard or misleading ports.  expected.json says, per capture, which
server endpoints were used and what protocol each spoke; it comes from the
script's table, not from a classifier.

Every flow that carries payload must match one expected endpoint and get
its protocol from the heuristics layer alone, and every endpoint must show
the number of flows the script made.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dpicore import Classifier
from dpicore.decode import CaptureSource
from dpicore.decode.capture import CaptureReader
from dpicore.decode.packets import DLT_EN10MB, DLT_LINUX_SLL2
from dpicore.model import Flow, FlowKey, Packet, transport_name
from dpicore.protocols import canonical

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_FILE = ROOT / "tests" / "captures" / "realclients" / "expected.json"
EXPECTED: dict[str, Any] = json.loads(EXPECTED_FILE.read_text())["captures"]
LINK_TYPES = {"EN10MB": DLT_EN10MB, "LINUX_SLL2": DLT_LINUX_SLL2}


def _matches(rule: dict[str, Any], flow: Flow) -> bool:
    if transport_name(flow.proto).lower() != rule["transport"]:
        return False
    if "ports" in rule:
        low, high = rule["ports"]
        return low <= flow.server_port <= high
    return flow.server_port == rule["port"]


def _payload_flows(packets: list[Packet], flows: list[Flow]) -> list[Flow]:
    """The flows that carried at least one payload byte (by key and time span, so a reused 5-tuple is exact)."""
    carried: dict[FlowKey, list[float]] = {}
    for p in packets:
        if p.payload_len:
            carried.setdefault(FlowKey.of(p), []).append(p.ts)
    return [f for f in flows if any(f.first_seen <= ts <= f.last_seen for ts in carried.get(f.key, ()))]


def _classify(path: Path, layers: list[str]) -> tuple[list[Packet], list[Flow]]:
    packets = list(CaptureSource(path))
    with Classifier(layers=layers) as clf:
        flows = list(clf.classify_packets(packets))
    return packets, flows


def test_expected_labels_cover_existing_small_captures() -> None:
    """expected.json and the files agree, and the committed captures stay small (< 1 MB in all)."""
    assert len(EXPECTED) >= 20
    total = 0
    for name, entry in EXPECTED.items():
        path = ROOT / entry["file"]
        assert path.is_file(), f"{name}: {entry['file']} is missing (regenerate: scripts/make_captures.py)"
        total += path.stat().st_size
        assert entry["flows"], name
    assert total < 1_000_000
    files = {p.name for p in (ROOT / "tests" / "captures" / "realclients").glob("*.pcap")}
    listed = {Path(e["file"]).name for e in EXPECTED.values()}
    assert files <= listed, f"captures without expected labels: {sorted(files - listed)}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_payload_flows_get_expected_protocol(name: str) -> None:
    entry = EXPECTED[name]
    packets, flows = _classify(ROOT / entry["file"], ["heuristics"])
    rules = entry["flows"]
    seen: Counter[int] = Counter()
    wrong: list[str] = []
    for flow in _payload_flows(packets, flows):
        hits = [i for i, rule in enumerate(rules) if _matches(rule, flow)]
        where = f"{transport_name(flow.proto)} :{flow.client_port} -> :{flow.server_port}"
        if len(hits) != 1:
            wrong.append(f"{where}: matches {len(hits)} expected endpoints (an unexpected flow)")
            continue
        seen[hits[0]] += 1
        rule = rules[hits[0]]
        got = flow.verdict.protocol if flow.verdict else "Unknown"
        if canonical(got) != canonical(rule["protocol"]):
            wrong.append(f"{where}: {got} (conf {flow.verdict.confidence if flow.verdict else 0:.2f}), "
                         f"expected {rule['protocol']} ({rule['client']} vs {rule['server']})")
    for i, rule in enumerate(rules):
        if seen[i] != rule["count"]:
            wrong.append(f"{rule['transport']}/{rule.get('port', rule.get('ports'))} {rule['protocol']}: "
                         f"{seen[i]} payload flows, the script made {rule['count']}")
    assert not wrong, f"{name} ({entry['about']}):\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_link_type_is_what_tcpdump_wrote(name: str) -> None:
    entry = EXPECTED[name]
    with CaptureReader(ROOT / entry["file"]) as reader:
        frames = sum(1 for _ in reader)
        assert reader.linktypes == [LINK_TYPES[entry["link_type"]]]
    assert frames > 0


SLL2 = [n for n, e in EXPECTED.items() if e["link_type"] == "LINUX_SLL2"]


@pytest.mark.parametrize("name", SLL2)
def test_sll2_capture_decodes_into_the_expected_flows(name: str) -> None:
    """`tcpdump -i any` writes Linux cooked v2 headers; every frame decodes, into the flows the script made."""
    entry = EXPECTED[name]
    source = CaptureSource(ROOT / entry["file"])
    packets = list(source)
    assert not source.damaged and not source.problems, source.problems
    with CaptureReader(ROOT / entry["file"]) as reader:
        assert len(packets) == sum(1 for _ in reader), "some SLL2 frames did not decode"
    with Classifier(layers=[]) as clf:
        flows = list(clf.classify_packets(packets))
    got = Counter((transport_name(f.proto).lower(), f.server_port) for f in _payload_flows(packets, flows))
    want = Counter({(r["transport"], r["port"]): r["count"] for r in entry["flows"]})
    assert got == want
    assert all(f.client != f.server or f.client_port != f.server_port for f in flows)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_default_pipeline_never_contradicts_the_expected_protocol(name: str) -> None:
    """With every installed layer in its default order, a payload flow may stay Unknown but never gets
    another protocol.  nDPI 4.2 itself (ndpiReader too) calls TLS on TCP 53 "DNS" and Dovecot's
    plaintext IMAP "IMAPS"; the heuristics run first so that the pipeline's answer is still right."""
    entry = EXPECTED[name]
    packets = list(CaptureSource(ROOT / entry["file"]))
    with Classifier() as clf:
        flows = list(clf.classify_packets(packets))
    wrong = []
    for flow in _payload_flows(packets, flows):
        rule = next((r for r in entry["flows"] if _matches(r, flow)), None)
        got = canonical(flow.verdict.protocol if flow.verdict else "Unknown")
        if rule is not None and got not in (canonical(rule["protocol"]), "Unknown"):
            wrong.append(f"{transport_name(flow.proto)} :{flow.server_port}: {got} from {flow.verdict.source} "
                         f"(conf {flow.verdict.confidence:.2f}), expected {rule['protocol']}")
    assert not wrong, f"{name} ({entry['about']}):\n  " + "\n  ".join(wrong)
