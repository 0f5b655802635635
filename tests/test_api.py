"""The Python API's contract at its edges: a closed Classifier, odd arguments (found by fuzzing: each
was a silent wrong answer, dpkt's PackError or an AttributeError)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dpicore import Classifier
from dpicore.api import MAX_PAYLOAD
from dpicore.model import TCP, UDP

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.pcap"
HTTP = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"


@pytest.fixture(scope="module")
def clf():
    with Classifier(layers=["heuristics"]) as c:
        yield c


def test_a_closed_classifier_refuses_work_instead_of_answering_unknown() -> None:
    c = Classifier(layers=["heuristics"])
    assert c.classify_payload(HTTP).protocol == "HTTP"
    c.close()
    c.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        c.classify_payload(HTTP)
    with pytest.raises(RuntimeError, match="closed"):
        list(c.classify_pcap(SAMPLE))
    with pytest.raises(RuntimeError, match="closed"):
        list(c.classify_packets([]))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"payload": "GET / HTTP/1.1"}, TypeError, "payload must be bytes"),
    ({"payload": [71, 69, 84]}, TypeError, "payload must be bytes"),
    ({"payload": b"x" * (MAX_PAYLOAD[TCP] + 1)}, ValueError, "at most 65495 bytes"),
    ({"payload": b"x" * (MAX_PAYLOAD[UDP] + 1), "transport": "udp"}, ValueError, "at most 65507 bytes"),
    ({"payload": HTTP, "dst_port": 70000}, ValueError, "dst_port must be an int in 0..65535"),
    ({"payload": HTTP, "src_port": -1}, ValueError, "src_port must be an int"),
    ({"payload": HTTP, "dst_port": "80"}, ValueError, "dst_port must be an int"),
    ({"payload": HTTP, "dst_port": True}, ValueError, "dst_port must be an int"),
    ({"payload": HTTP, "transport": 6}, ValueError, "transport must be 'tcp' or 'udp'"),
    ({"payload": HTTP, "transport": None}, ValueError, "transport must be 'tcp' or 'udp'"),
])
def test_classify_payload_refuses_what_one_packet_cannot_carry(clf: Classifier, kwargs: dict, error: type,
                                                               message: str) -> None:
    with pytest.raises(error, match=message):
        clf.classify_payload(**kwargs)


def test_classify_payload_takes_what_one_packet_can_carry(clf: Classifier) -> None:
    assert clf.classify_payload(bytearray(HTTP), dst_port=0).protocol == "HTTP"
    assert clf.classify_payload(memoryview(HTTP), src_port=65535).protocol == "HTTP"
    assert clf.classify_payload(HTTP + b"x" * (MAX_PAYLOAD[TCP] - len(HTTP))).protocol == "HTTP"


def test_layers_as_text_are_layer_ids_not_letters() -> None:
    with Classifier(layers="heuristics") as c:
        assert c.layers == ["heuristics"]


def test_config_must_be_a_config() -> None:
    with pytest.raises(TypeError, match="config_from_dict"):
        Classifier(config={"engine": {}})  # type: ignore[arg-type]


def test_capture_paths_as_text_bytes_or_path_and_nothing_else(clf: Classifier) -> None:
    counts = {len(list(clf.classify_pcap(p))) for p in (str(SAMPLE), SAMPLE, os.fsencode(SAMPLE))}
    assert len(counts) == 1 and counts.pop() > 0, "a bytes path once read as the text \"b'...'\": no flow"
    with pytest.raises(TypeError, match="path must be"):
        list(clf.classify_pcap(42))  # type: ignore[arg-type]
    assert list(clf.classify_pcap(SAMPLE.with_name("absent.pcap"))) == []
    assert clf.last_source is not None and clf.last_source.damaged, "a missing file is reported, not raised"
