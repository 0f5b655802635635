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
    ({"payload": HTTP, "from_server": "no"}, ValueError, "from_server must be True or False"),
    ({"payload": HTTP, "from_server": 1}, ValueError, "from_server must be True or False"),
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


REALCLIENTS = Path(__file__).resolve().parent / "captures" / "realclients"
HTTP_HEAD = b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"


def _keys(flows: list) -> list[tuple]:
    return sorted((str(f.key), f.packets) for f in flows)


def test_a_capture_left_midway_leaves_nothing_for_the_next_call() -> None:
    """A loop that stops early (break) left its live flows in the Classifier's table: the next
    classify_pcap reported them as its own, and classify_payload said "the packets form 18 flows"."""
    other = REALCLIENTS / "dns_udp_tcp.pcap"
    with Classifier(layers="heuristics") as alone:
        expected = _keys(list(alone.classify_pcap(other)))
    with Classifier(layers="heuristics") as dpi:
        for _ in dpi.classify_pcap(SAMPLE):  # 25 flows, most still live at the first one's end
            break
        assert dpi.classify_payload(HTTP_HEAD).protocol == "HTTP"
        for _ in dpi.classify_pcap(SAMPLE):
            break
        assert _keys(list(dpi.classify_pcap(other))) == expected


def test_payloads_classified_while_a_capture_is_read_touch_neither() -> None:
    """classify_payload inside a classify_pcap loop raised, and ended (lost) most of the capture's flows."""
    with Classifier(layers="heuristics") as alone:
        expected = _keys(list(alone.classify_pcap(SAMPLE)))
    with Classifier(layers="heuristics") as dpi:
        flows = []
        for flow in dpi.classify_pcap(SAMPLE):
            flows.append(flow)
            assert dpi.classify_payload(HTTP_HEAD).protocol == "HTTP"
        assert _keys(flows) == expected


def test_two_captures_at_once_on_one_classifier_are_refused() -> None:
    with Classifier(layers="heuristics") as dpi:
        first = dpi.classify_pcap(SAMPLE)
        next(first)
        with pytest.raises(RuntimeError, match="already reading"):
            next(dpi.classify_pcap(SAMPLE))
        assert len(list(first)) > 0  # the first goes on


def test_a_capture_read_on_after_close_stops() -> None:
    """Its flows kept coming, without verdicts (the layers were released)."""
    dpi = Classifier(layers="heuristics")
    flows = dpi.classify_pcap(SAMPLE)
    next(flows)
    dpi.close()
    with pytest.raises(RuntimeError, match="closed"):
        next(flows)


def test_all_layers_leaves_the_callers_config_alone() -> None:
    from dpicore.config import Config

    config = Config()
    Classifier(config=config, all_layers=True).close()
    assert config.all_layers is False


def test_a_payload_is_its_bytes_whatever_the_buffer() -> None:
    """A memoryview of 8-byte items was measured in items: 4 "bytes" of HTTP answered Unknown, and a
    160,000-byte view passed the size check and failed inside dpkt; array.array was refused."""
    import array

    with Classifier(layers="heuristics") as dpi:
        padded = HTTP_HEAD + b" " * (-len(HTTP_HEAD) % 8)
        assert dpi.classify_payload(memoryview(padded).cast("Q")).protocol == "HTTP"
        assert dpi.classify_payload(array.array("B", HTTP_HEAD)).protocol == "HTTP"
        with pytest.raises(ValueError, match="at most 65495 bytes, not 160000"):
            dpi.classify_payload(memoryview(bytes(160_000)).cast("Q"))
        with pytest.raises(TypeError, match="bytes-like"):
            dpi.classify_payload("GET / HTTP/1.1")  # type: ignore[arg-type]


@pytest.mark.parametrize("args, error", [
    ((b"x", "tcp", 1, 2, False), ValueError), ((b"x", 132, 1, 2, False), ValueError),
    ((b"x", TCP, 70000, 2, False), ValueError), (("x", TCP, 1, 2, False), TypeError),
])
def test_synthetic_packets_says_what_is_wrong(args: tuple, error: type) -> None:
    """"tcp" and 132 built a UDP packet; port 70000 and a str payload failed inside dpkt."""
    from dpicore import synthetic_packets

    with pytest.raises(error, match="proto must be|src_port must be|bytes-like"):
        synthetic_packets(*args)


@pytest.mark.parametrize("shard", [(0, 0), (2, 2), (-1, 2), ("a", 2), (0,)])
def test_a_shard_that_is_no_shard_is_refused(shard: tuple) -> None:
    """(0, 0) returned every flow with a numpy warning, (2, 2) none, (0,) an IndexError from inside."""
    with Classifier(layers="heuristics") as dpi, pytest.raises(ValueError, match="shard must be"):
        next(dpi.classify_pcap(SAMPLE, shard=shard))


def test_flow_from_packet_holds_its_packet() -> None:
    """As go-dpi's GetPacketFlow: the new flow counts the packet it was made from (it counted none)."""
    from dpicore import flow_from_packet, synthetic_packets

    pkt = synthetic_packets(b"x", UDP, 1000, 53, False)[0]
    flow = flow_from_packet(pkt)
    assert (flow.packets, flow.bytes, flow.c2s_packets) == (1, pkt.wire_len, 1)


def test_layers_as_bytes_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="layer ids"):
        Classifier(layers=b"ndpi")  # type: ignore[arg-type]


def test_a_loop_left_at_its_last_flow_leaves_no_clock_behind(tmp_path: Path) -> None:
    """Left while the table was already empty, the table kept its close queue and its clock (horizon):
    an older capture read next on the same Classifier split differently (regression fuzzing)."""
    from dpicore.model import ACK, FIN, RST, SYN
    from tests.helpers.frames import pcap_bytes, tcp4

    c, s = "10.0.0.1", "10.0.1.9"
    newer, older = tmp_path / "newer.pcap", tmp_path / "older.pcap"
    newer.write_bytes(pcap_bytes([(1000.0, tcp4(c, 5000, s, 80, SYN)), (1000.01, tcp4(s, 80, c, 5000, SYN | ACK)),
                                  (1000.03, tcp4(c, 5000, s, 80, FIN | ACK)),
                                  (1000.04, tcp4(s, 80, c, 5000, FIN | ACK))], linktype=101))
    older.write_bytes(pcap_bytes([(50.0, tcp4(c, 6000, s, 80, SYN)), (50.01, tcp4(s, 80, c, 6000, SYN | ACK)),
                                  (50.02, tcp4(c, 6000, s, 80, RST)), (60.0, tcp4(c, 7000, s, 81, SYN)),
                                  (53.0, tcp4(c, 6000, s, 80, ACK))], linktype=101))
    with Classifier(layers="heuristics") as fresh:
        expected = _keys(list(fresh.classify_pcap(older)))
    with Classifier(layers="heuristics") as dpi:
        for _ in dpi.classify_pcap(newer):
            break  # its only flow: the table is empty now, its clock and close queue are not
        assert _keys(list(dpi.classify_pcap(older))) == expected
