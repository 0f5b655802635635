"""Batch C heuristics on the opening messages of real client programs.

``data/batch_c_clients.json`` holds what dig, nmblookup, smbclient,
snmpget, tftp-hpa, rpcinfo, logger and impacket's rdp_check/rpcdump sent to
a recording listener on loopback (``data/make_batch_c_clients.py`` made it
and says how).  Each must be named from that first payload alone, through
the engine's first-payload API, on ports that say nothing (the client's
port is arbitrary and the server's is one no protocol owns), and by no
other batch-C heuristic.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dpicore import Classifier
from dpicore.model import TCP, UDP

from dpi_heuristics.protocols import all_heuristics
from dpi_heuristics.testing import classify

SAMPLES = json.loads((Path(__file__).parent / "data" / "batch_c_clients.json").read_text())["samples"]
BATCH_C = {"DNS", "MDNS", "LLMNR", "NetBIOS", "SMB", "RDP", "DCERPC", "NTP", "DHCP", "DHCPv6", "SNMP", "Syslog",
           "TFTP", "SSDP", "NFS", "ICMP"}


def test_the_recording_covers_the_client_programs() -> None:
    assert {s["protocol"] for s in SAMPLES} >= {"DNS", "NetBIOS", "SMB", "SNMP", "TFTP", "NFS", "Syslog", "RDP",
                                                "DCERPC"}


@pytest.fixture(scope="module")
def classifier():
    with Classifier(layers=["heuristics"]) as clf:
        yield clf


@pytest.mark.parametrize("sample", SAMPLES, ids=[f"{s['protocol']}-{s['transport']}-{i}" for i, s in enumerate(SAMPLES)])
def test_real_client_first_payload(classifier: Classifier, sample: dict) -> None:
    payload = bytes.fromhex(sample["hex"])
    v = classifier.classify_payload(payload, sample["transport"], src_port=51234, dst_port=40999)
    assert v.protocol == sample["protocol"], (sample["command"], v)
    assert v.confidence >= 0.8 and not v.metadata.get("port_hint")
    transport = TCP if sample["transport"] == "tcp" else UDP
    others = [h for h in all_heuristics() if h.name in BATCH_C and h.name != sample["protocol"]]
    assert classify([(0, payload)], transport, heuristics=others) is None


def test_real_client_metadata(classifier: Classifier) -> None:
    by_command = {s["command"]: bytes.fromhex(s["hex"]) for s in SAMPLES}

    def meta(fragment: str, transport: str, unless: tuple[str, ...] = ()) -> dict:
        (payload,) = [p for c, p in by_command.items() if fragment in c and not any(u in c for u in unless)]
        return classifier.classify_payload(payload, transport, src_port=51234, dst_port=40999).metadata

    assert meta("example.com MX", "tcp")["query_type"] == "MX"
    assert meta("nmblookup", "udp")["name"] == "WORKGROUP"
    assert meta("-p 139", "tcp")["message"] == "session request"
    smb1 = meta("min protocol=NT1", "tcp")
    assert smb1["version"] == "SMB1" and "NT LM 0.12" in smb1["dialects"]
    smb2 = meta("smbclient", "tcp", unless=("139", "NT1"))
    assert smb2["version"] == "SMB3" and "3.1.1" in smb2["dialects"]
    assert meta("-v2c", "udp")["community"] == "private"
    assert meta("-v3", "udp")["version"] == "v3"
    assert meta("tftp", "udp")["filename"] == "pxelinux.0"
    assert meta("rpcinfo -p", "tcp")["program"] == "portmapper"
    assert meta("--rfc3164", "udp")["format"] == "rfc3164"
    assert meta("rdp_check", "tcp")["requested_protocols"] == ["ssl", "hybrid"]
    assert meta("rpcdump", "tcp")["interface"] == "epmapper"
