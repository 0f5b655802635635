"""The dispatcher and the plugin hooks: pre-filters, selection by name, isolation of a raising detector,
guesses at the end of a flow, and watching after a verdict."""

from __future__ import annotations

import ssl
from collections import Counter

import attrs
import pytest
from dpicore import Classifier
from dpicore.config import Config
from dpicore.model import TCP, UDP

from dpi_heuristics import plugin
from dpi_heuristics.base import MORE, Heuristic, found
from dpi_heuristics.dispatch import Dispatcher
from dpi_heuristics.protocols import all_heuristics
from dpi_heuristics.testing import classify, make_flow, packets


def counting(heuristics: list[Heuristic], calls: Counter) -> list[Heuristic]:
    """The same heuristics, each counting its calls."""
    def wrap(h: Heuristic) -> Heuristic:
        def detect(ctx):  # type: ignore[no-untyped-def]
            calls[h.name] += 1
            return h.detect(ctx)
        return attrs.evolve(h, detect=detect)
    return [wrap(h) for h in heuristics]


def test_names_are_canonical() -> None:
    """The name is what users block; it must be the registry's spelling (a protocol may have several)."""
    from dpicore.protocols import canonical
    for h in all_heuristics():
        for name in (h.name, *h.also):
            assert canonical(name) == name, f"{h.name}: {name} is not a canonical protocol name"


def test_a_flow_runs_only_its_candidates() -> None:
    calls: Counter = Counter()
    heuristics = counting(all_heuristics(), calls)
    verdict = classify([(0, b"SSH-2.0-OpenSSH_9.2\r\n")], TCP, heuristics)
    assert verdict is not None and verdict.protocol == "SSH"
    tcp = [h for h in heuristics if TCP in h.transports]
    assert 0 < len(calls) < len(tcp) / 2, sorted(calls)
    # The first-byte table never offers a heuristic whose pre-filter excludes that byte.
    dispatcher = Dispatcher(all_heuristics())
    for h in dispatcher.candidates(TCP, 0x16):
        assert h.first_bytes is None or 0x16 in h.first_bytes
    assert all(UDP in h.transports for h in dispatcher.candidates(UDP, 0x80))


def test_enable_and_block_by_name() -> None:
    everything = all_heuristics()
    assert sorted(h.name for h in plugin.select(everything, {"enable": ["tls", "SSH"]})) == ["SSH", "TLS"]
    blocked = plugin.select(everything, {"block": ["RTP"]})
    assert "RTP" not in {h.name for h in blocked} and len(blocked) == len(everything) - 1
    with pytest.raises(ValueError, match="NoSuchProtocol"):
        plugin.select(everything, {"block": ["NoSuchProtocol"]})


def test_block_through_the_configuration() -> None:
    rtp = [(0, bytes.fromhex("80000064") + b"\x00\x00\x1f\x40" + b"\x11\x22\x33\x44" + bytes(160)),
           (0, bytes.fromhex("80000065") + b"\x00\x00\x20\x00" + b"\x11\x22\x33\x44" + bytes(160))]
    config = Config(layer_settings={"heuristics": {"block": ["RTP"]}})
    with Classifier(config=config, layers=["heuristics"]) as clf:
        assert clf.classify_flow(packets(rtp, UDP, 5004, 5004)).verdict.protocol == "Unknown"
    with Classifier(layers=["heuristics"]) as clf:
        assert clf.classify_flow(packets(rtp, UDP, 5004, 5004)).verdict.protocol == "RTP"


def test_a_raising_detector_costs_only_itself() -> None:
    def explode(ctx):  # type: ignore[no-untyped-def]
        raise IndexError("boom")
    bad = Heuristic("Broken", explode, frozenset({TCP}), None, order=0)
    dispatcher = Dispatcher([bad, *all_heuristics()])
    flow = make_flow()
    verdict = classify([(0, b"SSH-2.0-x\r\n")], flow=flow, dispatcher=dispatcher)
    assert verdict is not None and verdict.protocol == "SSH"
    assert dispatcher.errors["Broken"] == 1
    assert any("Broken raised IndexError" in e for e in flow.errors)


def test_a_guess_answers_when_the_flow_ends() -> None:
    with Classifier(layers=["heuristics"]) as clf:
        # A request head without its blank line, and a SOCKS 5 greeting: both wait for more, then guess.
        http = clf.classify_payload(b"GET /x HTTP/1.1\r\nHost: a.test\r\n")
        socks = clf.classify_payload(b"\x05\x01\x00")
    assert http.protocol == "HTTP" and http.metadata["host"] == "a.test"
    assert socks.protocol == "SOCKS" and socks.confidence < 0.8
    # A later packet that contradicts the guess withdraws it.
    def hopeful(ctx):  # type: ignore[no-untyped-def]
        return ctx.guess(found("Hopeful", 0.7)) if ctx.index == 1 else None
    h = Heuristic("Hopeful", hopeful, frozenset({TCP}), None)
    assert classify([(0, b"a")], heuristics=[h]).protocol == "Hopeful"
    assert classify([(0, b"a"), (0, b"b")], heuristics=[h]) is None


def test_watching_after_the_verdict_updates_metadata(tls_handshake) -> None:
    hello, flight = tls_handshake(alpn=["h2"], server_max=ssl.TLSVersion.TLSv1_2)
    with Classifier(layers=["heuristics"]) as clf:
        first_only = clf.classify_flow(packets([(0, hello)], TCP, server_port=443)).verdict
        both = clf.classify_flow(packets([(0, hello), (1, flight)], TCP, server_port=443)).verdict
    assert first_only.metadata["version"] == "TLSv1.3"  # what the client offered
    assert both.metadata["version"] == "TLSv1.2" and both.metadata["alpn_selected"] == "h2"
    assert both.metadata["ja3"] == first_only.metadata["ja3"]


def test_more_then_nothing_is_unknown() -> None:
    def waits(ctx):  # type: ignore[no-untyped-def]
        return MORE if ctx.index < 2 else None
    assert classify([(0, b"x"), (0, b"y")], heuristics=[Heuristic("Waits", waits)]) is None


def test_without_cryptography_the_layer_fails_to_load_and_says_why() -> None:
    """cryptography (QUIC Initials) is imported on the first QUIC flow, not at start-up; a missing one
    must still fail the layer when it loads, with the reason, not give one error per QUIC flow."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['cryptography'] = None\n"  # what an absent package looks like
            "from dpicore import Classifier\nfrom dpicore.config import Config\n"
            "from dpicore.plugins import PluginError\n"
            "try:\n    Classifier(config=Config().with_layers(['heuristics']))\n"
            "except PluginError as exc:\n    print('FAILED', exc)\nelse:\n    print('LOADED')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.startswith("FAILED") and "cryptography" in out, out
