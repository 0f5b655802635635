"""Honeypot use: one first payload, through ``Classifier.classify_payload``, names the protocol.

For every flow of the nDPI corpus that nDPI labelled from its payload (not by
port or address) with a protocol of issue 3's list, the first message is
handed to ``classify_payload``: what the first speaker sent before the other
side answered (the segments a honeypot has read when it must reply; a
client may send ``<?xml ...?>`` and its XMPP stream header in two segments),
from the client for client-first protocols, from the server
(``from_server=True``) when the server spoke first (FTP, SMTP, POP3, IMAP,
MySQL, VNC, ...).  The ports are the API's defaults (1 and 49152), so
nothing but the bytes can decide.

Flows are grouped by protocol and direction; each group must name its
protocol for all its flows, but one in groups of three or more (the misses
are printed: a corpus oddity worth reading, not a reason to fail).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from dpicore import Classifier
from dpicore.corpus import captures, flow_key, match
from dpicore.decode import CaptureSource
from dpicore.model import TCP, UDP, Flow, FlowKey

from dpi_heuristics.corpus_eval import ISSUE_PROTOCOLS

#: Protocols a lone payload cannot name by definition: mDNS and LLMNR are DNS sent to their multicast
#: groups (the API's fixed addresses are not those), FTP data needs its control connection, and a
#: first payload cannot be ICMP through an API that takes TCP or UDP.
NOT_FROM_ONE_PAYLOAD = {"MDNS", "LLMNR", "FTP_DATA", "ICMP"}
#: nDPI labels that the bytes contradict, read by hand (file, protocol): why.
WRONG_LABELS = {
    ("http_guessed_host_and_guessed.pcapng", "POP3"): "one packet of binary bytes and an HTTP status line",
}


def first_messages(path: Path) -> dict[FlowKey, tuple[int, int, bytes]]:
    """Per flow key: (transport, direction of the first payload, what that side sent before the
    other side's first payload; UDP: the first datagram)."""
    out: dict[FlowKey, tuple[int, int, bytes]] = {}
    answered: set[FlowKey] = set()
    clients: dict[FlowKey, tuple[bytes, int]] = {}
    for p in CaptureSource(path):
        if p.proto not in (TCP, UDP):
            continue
        key = FlowKey.of(p)
        clients.setdefault(key, (p.dst, p.dport) if p.tcp_flags & 0x12 == 0x12 else (p.src, p.sport))
        if not p.payload or key in answered:
            continue
        direction = 0 if (p.src, p.sport) == clients[key] else 1
        if key not in out:
            out[key] = (p.proto, direction, bytes(p.payload))
        elif out[key][1] == direction and p.proto == TCP and len(out[key][2]) < 16384:
            out[key] = (p.proto, direction, out[key][2] + bytes(p.payload))
        else:
            answered.add(key)
    return out


@pytest.mark.corpus
def test_first_payload_alone_names_the_protocol(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    with Classifier(layers=["heuristics"]) as clf:
        for path, labels in captures(corpus):
            firsts = first_messages(path)
            flows: list[Flow] = list(clf.classify_pcap(path))
            pairs, _, _ = match(((flow_key(f), f) for f in flows), labels)
            for flow, label in pairs:
                expected = label.protocol
                if (expected not in ISSUE_PROTOCOLS or expected in NOT_FROM_ONE_PAYLOAD
                        or label.confidence != "DPI" or flow.key not in firsts
                        or (path.name, expected) in WRONG_LABELS):
                    continue
                transport, direction, payload = firsts[flow.key]
                verdict = clf.classify_payload(payload, "tcp" if transport == TCP else "udp",
                                               from_server=direction == 1)
                side = "server" if direction else "client"
                groups[(expected, side)].append((verdict.protocol, f"{path.name}: {payload[:24]!r}"))
    failures, table = [], []
    for (proto, side), results in sorted(groups.items()):
        wrong = [where for got, where in results if got != proto]
        table.append(f"  {proto:<11} first message from the {side}: {len(results) - len(wrong)}/{len(results)}"
                     + "".join(f"\n      missed {where}" for where in wrong))
        if len(wrong) > (1 if len(results) > 2 else 0):
            failures.append(f"{proto} ({side} first): " + "; ".join(wrong[:4]))
    with capsys.disabled():
        print("\n" + "\n".join(table))
    assert len(groups) >= 40, sorted(groups)
    assert not failures, "\n".join(failures)
