"""The pipeline (dpicore/engine.py): layer order, first-verdict and
all-layers modes, packet budgets, retransmissions, isolation of a layer that
raises, Verdict.watch, and the dpi_flow_end contract.

The layers are small in-test plugin objects registered through the real
loader (PluginSet.add): they test our own pipeline, not a classifier.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from dpicore import LayerInfo, Verdict, hookimpl
from dpicore.config import Config
from dpicore.engine import MAX_LAYER_ERRORS, Engine
from dpicore.model import Flow
from dpicore.output import flow_record, jsonl_line
from dpicore.plugins import PluginSet
from dpicore.protocols import ProtocolRegistry
from tests.helpers.frames import ACK, PSH, SYN, packet, tcp_session


class Recorder:
    """A layer that logs its calls and answers from a script: ``answers[n]`` for its n-th call on a flow."""

    def __init__(self, layer_id: str, priority: int = 50, answers: dict[int, Any] | None = None,
                 max_packets: int = 10, wants_empty: bool = False, log: list | None = None,
                 raises: Exception | None = None, hold_empty: int = 0, reads_payloads: bool = True) -> None:
        self.id = layer_id
        self.info = LayerInfo(id=layer_id, priority=priority, max_packets=max_packets, wants_empty=wants_empty,
                              hold_empty=hold_empty, reads_payloads=reads_payloads)
        self.answers = answers or {}
        self.log = log if log is not None else []
        self.raises = raises
        self.calls = 0
        self.payloads: list[bytes] = []
        self.ends: list[tuple[int, str]] = []
        self.news = 0

    @hookimpl
    def dpi_layer_info(self) -> LayerInfo:
        return self.info

    @hookimpl
    def dpi_flow_new(self, flow: Flow, packet: Any) -> dict:
        self.news += 1
        return {"flow": id(flow), "calls": 0}

    @hookimpl
    def dpi_classify(self, flow: Flow, packet: Any, state: dict) -> Verdict | None:
        assert state["flow"] == id(flow), "the state of this flow is passed back"
        self.calls += 1
        state["calls"] += 1
        self.log.append(self.id)
        self.payloads.append(bytes(packet.payload))
        if self.raises is not None:
            raise self.raises
        answer = self.answers.get(state["calls"])
        return answer() if callable(answer) else answer

    @hookimpl
    def dpi_flow_end(self, flow: Flow, reason: str) -> None:
        self.ends.append((id(flow), reason))


def build(*layers: Recorder, **settings: Any) -> Engine:
    config = Config(**{k: v for k, v in settings.items() if k != "layer_settings"})
    config.layer_settings = settings.get("layer_settings", {})
    plugins = PluginSet(config, registry=ProtocolRegistry())
    for layer in layers:
        assert plugins.add(layer.id, layer), plugins.statuses[layer.id].reason
    return Engine(plugins, config)


def data_packets(n: int, t0: float = 1.0, sport: int = 40000) -> list:
    """A flow of ``n`` client payload packets with increasing sequence numbers."""
    return [packet(t0 + i * 0.01, sport=sport, flags=PSH | ACK, payload=b"p%03d" % i, seq=1 + 4 * i)
            for i in range(n)]


def test_layers_run_in_priority_order() -> None:
    log: list[str] = []
    layers = [Recorder("c", 30, log=log), Recorder("a", 10, log=log), Recorder("b", 20, log=log)]
    e = build(*layers)
    assert [l.id for l in e.layers] == ["a", "b", "c"]
    list(e.run(data_packets(2)))
    assert log == ["a", "b", "c", "a", "b", "c"]


def test_config_overrides_priority() -> None:
    log: list[str] = []
    layers = [Recorder("a", 10, log=log), Recorder("b", 20, log=log), Recorder("c", 30, log=log)]
    e = build(*layers, layer_settings={"c": {"priority": 5}, "a": {"priority": 25}})
    assert [(l.id, l.priority) for l in e.layers] == [("c", 5), ("b", 20), ("a", 25)]
    list(e.run(data_packets(1)))
    assert log == ["c", "b", "a"]


def test_ties_are_broken_by_id() -> None:
    e = build(Recorder("zz", 10), Recorder("aa", 10))
    assert [l.id for l in e.layers] == ["aa", "zz"]


def test_first_verdict_stops_at_the_first_confident_layer() -> None:
    weak = Recorder("weak", 10, answers={1: lambda: Verdict("DNS", confidence=0.3)})
    strong = Recorder("strong", 20, answers={2: lambda: Verdict("http", confidence=0.9, metadata={"host": "x"})})
    late = Recorder("late", 30)
    e = build(weak, strong, late)
    (flow,) = e.run(data_packets(5))
    assert flow.verdict.protocol == "HTTP" and flow.verdict.source == "strong"   # canonical name
    assert weak.calls == 1, "a layer that answered is not asked again"
    assert strong.calls == 2 and late.calls == 1, "nothing runs after the confident verdict"
    assert [v.source for v in flow.verdicts] == ["weak", "strong"]
    assert flow.final


def test_unknown_verdict_means_done_without_an_answer() -> None:
    giveup = Recorder("giveup", 10, answers={1: lambda: Verdict("Unknown", confidence=1.0)})
    later = Recorder("later", 20, answers={3: lambda: Verdict("SSH", confidence=0.8)})
    (flow,) = build(giveup, later).run(data_packets(4))
    assert giveup.calls == 1 and later.calls == 3
    assert flow.verdict.protocol == "SSH"


def test_low_confidence_verdict_is_the_fallback() -> None:
    unsure = Recorder("unsure", 10, answers={1: lambda: Verdict("SMTP", confidence=0.2)})
    (flow,) = build(unsure, Recorder("silent", 20, max_packets=3)).run(data_packets(5))
    assert flow.verdict.protocol == "SMTP" and flow.verdict.confidence == 0.2


def test_all_layers_mode_reports_every_verdict() -> None:
    a = Recorder("a", 10, answers={1: lambda: Verdict("HTTP", confidence=0.9)})
    b = Recorder("b", 20, answers={2: lambda: Verdict("TLS", confidence=0.6)})
    c = Recorder("c", 30, answers={1: lambda: Verdict("Unknown", confidence=0.0)})
    e = build(a, b, c, all_layers=True)
    (flow,) = e.run(data_packets(4))
    assert [(v.source, v.protocol) for v in flow.verdicts] == [("a", "HTTP"), ("c", "Unknown"), ("b", "TLS")]
    assert (a.calls, b.calls, c.calls) == (1, 2, 1)
    assert flow.verdict.source == "a", "the highest-priority confident verdict wins"


def test_max_packets_budget() -> None:
    layer = Recorder("budget", 10, max_packets=3)
    (flow,) = build(layer).run(data_packets(10))
    assert layer.calls == 3 and layer.payloads == [b"p000", b"p001", b"p002"]
    assert [r for _, r in layer.ends] == ["budget"]
    assert flow.final and flow.packets == 10


def test_empty_packets_only_reach_layers_that_want_them() -> None:
    plain = Recorder("plain", 10, max_packets=100)
    tcpstate = Recorder("tcpstate", 20, max_packets=100, wants_empty=True)
    pk = tcp_session()
    list(build(plain, tcpstate).run(pk))
    assert plain.calls == 2 and tcpstate.calls == len(pk)


class EndLogged(Recorder):
    """A Recorder whose ``dpi_flow_end`` also goes into its log (to see what came before it)."""

    @hookimpl
    def dpi_flow_end(self, flow: Flow, reason: str) -> None:
        self.ends.append((id(flow), reason))
        self.log.append(f"{self.id} end")


def test_held_empty_packets_reach_the_layer_in_order_before_its_first_payload() -> None:
    layer = EndLogged("tcpstate", 20, max_packets=100, wants_empty=True, hold_empty=5)
    e = build(layer)
    pk = tcp_session(close="rst")  # SYN, SYN-ACK, ACK, request, response, RST
    calls = []
    for p in pk:
        e.feed(p)
        calls.append(layer.calls)
    assert calls == [0, 0, 0, 4, 5, 6], "held until the first payload, then each packet on arrival"
    e.flush()
    assert layer.payloads == [bytes(p.payload) for p in pk] and layer.log[-1] == "tcpstate end"


def test_held_empty_packets_are_dropped_when_another_layer_decides_first() -> None:
    def run(hold: int) -> tuple[Recorder, Flow]:
        first = Recorder("first", 10, answers={1: lambda: Verdict("HTTP", confidence=0.9)})
        tcpstate = Recorder("tcpstate", 20, max_packets=100, wants_empty=True, hold_empty=hold)
        (flow,) = build(first, tcpstate).run(tcp_session())
        return tcpstate, flow

    eager, flow = run(0)
    assert eager.calls == 3 and flow.verdict.source == "first"  # SYN, SYN-ACK, ACK
    held, flow = run(5)
    assert held.calls == 0 and [r for _, r in held.ends] == ["decided"] and flow.verdict.source == "first"


def test_a_flow_without_payload_hands_its_held_packets_over_before_its_end() -> None:
    layer = EndLogged("tcpstate", 20, max_packets=100, wants_empty=True, hold_empty=10)
    pk = [packet(1.0, flags=SYN), packet(1.1, flags=ACK), packet(1.2, flags=ACK)]
    (flow,) = build(layer).run(pk)
    assert layer.log == ["tcpstate"] * 3 + ["tcpstate end"]


class Opening(EndLogged):
    """An EndLogged that logs its ``dpi_flow_new`` calls too, with the packet each was given."""

    @hookimpl
    def dpi_flow_new(self, flow: Flow, packet: Any) -> dict:
        self.news += 1
        self.log.append(f"{self.id} new at {packet.ts}")
        return {"flow": id(flow), "calls": 0}


@pytest.mark.parametrize("close", ["payload", "end", "past the hold"])
def test_layers_start_once_a_flow_holds_no_more(close: str) -> None:
    """While a new flow's packets carry no payload and every layer that wants them holds them, no layer
    is started (a SYN flood's flows cost no layer state): each gets dpi_flow_new, with the packet that
    opened the flow, and the held packets in order, at the first payload, the packet past the hold, or
    the flow's end; a layer that wants no empty packet gets none."""
    log: list[str] = []
    held = Opening("held", 20, max_packets=100, wants_empty=True, hold_empty=3, log=log)
    payload_only = Opening("payload", 10, max_packets=100, log=log)
    e = build(payload_only, held)
    syn, synack, ack = packet(1.0, flags=SYN), packet(1.1, flags=SYN | ACK, sport=80, dport=40000,
                                                        src="10.0.0.2", dst="10.0.0.1"), packet(1.2, flags=ACK)
    for p in (syn, synack, ack):
        e.feed(p)
    assert log == [] and e.stats.flows == 1, "three payload-less packets, a hold of three: nothing started"
    if close == "payload":
        e.feed(packet(1.3, flags=PSH | ACK, payload=b"GET /", seq=1))
        assert log == ["payload new at 1.0", "held new at 1.0", "payload", "held", "held", "held", "held"]
    elif close == "past the hold":
        e.feed(packet(1.3, flags=ACK))
        assert log == ["payload new at 1.0", "held new at 1.0", "held", "held", "held", "held"]
    else:
        (flow,) = e.flush()
        assert log == ["payload new at 1.0", "held new at 1.0", "held", "held", "held", "payload end", "held end"]
        assert flow.final and flow.pending is None


def test_layers_start_with_the_first_packet_when_one_wants_empty_packets_on_arrival() -> None:
    eager = Recorder("eager", 10, max_packets=100, wants_empty=True)
    held = Recorder("held", 20, max_packets=100, wants_empty=True, hold_empty=3)
    e = build(eager, held)
    e.feed(packet(1.0, flags=SYN))
    assert (eager.news, eager.calls, held.news, held.calls) == (1, 1, 1, 0)
    alone = Recorder("payload", 10)
    e = build(alone)
    e.feed(packet(1.0, flags=SYN))
    assert alone.news == 1, "no layer wants the packet: keeping it would cost more than starting"


def test_no_more_than_hold_empty_packets_are_held() -> None:
    layer = Recorder("tcpstate", 20, max_packets=100, wants_empty=True, hold_empty=2)
    e = build(layer)
    calls = []
    for i in range(5):
        e.feed(packet(1.0 + i / 10, flags=ACK))
        calls.append(layer.calls)
    assert calls == [0, 0, 3, 4, 5], "the third packet hands over the two held ones and itself"


@pytest.mark.parametrize("first_answers", [None, 1, 2])
@pytest.mark.parametrize("held_answers", [None, 1, 2, "packet 3", "packet 6"])
@pytest.mark.parametrize("confidence", [0.9, 0.3])
@pytest.mark.parametrize("all_layers", [False, True])
def test_holding_changes_no_verdict_of_a_layer_that_keeps_the_contract(
        first_answers: int | None, held_answers: int | str | None, confidence: float, all_layers: bool) -> None:
    """A layer that answers only on a packet with payload, or (like the ML layer) at its n-th packet
    with hold_empty n - 1, gets the same verdicts in the same order, the same packets and the same
    flow_end reasons with payload-less packets held back as without."""

    class Answering(Recorder):
        @hookimpl
        def dpi_classify(self, flow: Flow, packet: Any, state: dict) -> Verdict | None:
            self.calls += 1
            state["calls"] += 1
            self.payloads.append(bytes(packet.payload))
            at = self.answers.get("at")
            if packet.payload:
                state["payloads"] = state.get("payloads", 0) + 1
                if state["payloads"] == at:
                    return Verdict(self.answers["protocol"], confidence=confidence)
            if at == f"packet {state['calls']}":
                return Verdict(self.answers["protocol"], confidence=confidence)
            return None

    held_hold = int(held_answers.split()[1]) - 1 if isinstance(held_answers, str) else 8

    def run(hold: bool) -> tuple:
        first = Answering("first", 10, answers={"at": first_answers, "protocol": "HTTP"}, max_packets=100)
        held = Answering("held", 20, answers={"at": held_answers, "protocol": "TLS"}, max_packets=100,
                         wants_empty=True, hold_empty=held_hold if hold else 0)
        flows = list(build(first, held, all_layers=all_layers).run(
            tcp_session() + tcp_session(t0=200.0, client=("10.0.0.3", 40001), close="rst")))
        seen = held.payloads if held.ends and held.ends[0][1] != "decided" else [p for p in held.payloads if p]
        return ([(v.source, v.protocol, v.confidence) for f in flows for v in f.verdicts],
                [(f.verdict.source, f.verdict.protocol) if f.verdict else None for f in flows],
                [r for _, r in first.ends], [r for _, r in held.ends], first.payloads, seen)

    assert run(True) == run(False)

    layer = Recorder("seen", 10, max_packets=100)
    pk = data_packets(3)
    again = packet(pk[1].ts + 0.5, flags=PSH | ACK, payload=pk[1].payload, seq=pk[1].seq)
    overlap_old = packet(pk[2].ts + 0.5, flags=PSH | ACK, payload=b"p00", seq=pk[0].seq)  # old bytes only
    fresh = packet(pk[2].ts + 1.0, flags=PSH | ACK, payload=b"next", seq=pk[2].seq + 4)
    (flow,) = build(layer).run(pk + [again, overlap_old, fresh])
    assert layer.payloads == [b"p000", b"p001", b"p002", b"next"]
    assert flow.packets == 6, "the retransmission still counts on the flow"


def test_server_direction_has_its_own_sequence_space() -> None:
    layer = Recorder("dirs", 10, max_packets=100)
    c = packet(1.0, flags=PSH | ACK, payload=b"req", seq=100)
    s = packet(1.1, "10.0.0.2", 80, "10.0.0.1", 40000, flags=PSH | ACK, payload=b"resp", seq=100)
    list(build(layer).run([c, s]))
    assert layer.payloads == [b"req", b"resp"]


def test_a_layer_that_raises_is_isolated() -> None:
    broken = Recorder("broken", 10, raises=ZeroDivisionError("boom"))
    good = Recorder("good", 20, answers={1: lambda: Verdict("HTTP", confidence=0.9)})
    e = build(broken, good)
    flows = list(e.run(data_packets(3, sport=1) + data_packets(3, t0=5.0, sport=2)))
    assert [f.verdict.protocol for f in flows] == ["HTTP", "HTTP"]
    for flow in flows:
        assert flow.errors == ["broken: dpi_classify raised ZeroDivisionError: boom"]
    assert broken.calls == 2, "after raising, the layer leaves that flow"
    layer = next(l for l in e.layers if l.id == "broken")
    assert layer.errors == 2 and "boom" in layer.last_error and e.stats.layer_errors == 2
    assert [r for _, r in broken.ends] == ["error", "error"]


def test_a_layer_that_keeps_raising_is_switched_off() -> None:
    broken = Recorder("broken", 10, raises=ValueError("bad"))
    e = build(broken)
    flows = list(e.run([packet(1.0 + i * 0.001, sport=1000 + i, payload=b"x", flags=PSH | ACK)
                        for i in range(MAX_LAYER_ERRORS + 20)]))
    assert len(flows) == MAX_LAYER_ERRORS + 20
    assert broken.calls == MAX_LAYER_ERRORS
    assert next(l for l in e.layers if l.id == "broken").disabled


class Failing(Recorder):
    def __init__(self, hook: str, **kw: Any) -> None:
        super().__init__("failing", 10, **kw)
        self.hook = hook

    @hookimpl
    def dpi_flow_new(self, flow: Flow, packet: Any) -> dict:
        if self.hook == "new":
            raise RuntimeError("no state")
        return super().dpi_flow_new(flow, packet)

    @hookimpl
    def dpi_flow_end(self, flow: Flow, reason: str) -> None:
        super().dpi_flow_end(flow, reason)
        if self.hook == "end":
            raise KeyError("gone")


@pytest.mark.parametrize("hook, message", [("new", "dpi_flow_new raised RuntimeError"),
                                           ("end", "dpi_flow_end raised KeyError")])
def test_flow_new_and_flow_end_errors_are_recorded(hook: str, message: str) -> None:
    bad = Failing(hook, answers={2: lambda: Verdict("FTP", confidence=0.9)})
    good = Recorder("good", 20, answers={3: lambda: Verdict("IRC", confidence=0.9)})
    (flow,) = build(bad, good).run(data_packets(4))
    assert len(flow.errors) == 1 and message in flow.errors[0]
    assert flow.verdict.protocol == ("IRC" if hook == "new" else "FTP")


def test_wrong_return_type_is_an_error_not_a_crash() -> None:
    bad = Recorder("bad", 10, answers={1: lambda: "HTTP"})
    good = Recorder("good", 20, answers={1: lambda: Verdict("DNS", confidence=0.9)})
    (flow,) = build(bad, good).run(data_packets(2))
    assert flow.verdict.protocol == "DNS"
    assert any("returned str, not Verdict" in e for e in flow.errors)


def test_watch_lets_the_deciding_layer_see_more_packets() -> None:
    watcher = Recorder("w", 10, answers={
        1: lambda: Verdict("FTP", confidence=0.9, metadata={"user": "anon"}, watch=2),
        2: lambda: Verdict("FTP", metadata={"cwd": "/pub"}),
    })
    other = Recorder("other", 20)
    (flow,) = build(watcher, other).run(data_packets(6))
    assert watcher.calls == 3, "the verdict's packet plus two watched ones"
    assert other.calls == 0
    assert flow.verdict.protocol == "FTP" and flow.verdict.metadata == {"user": "anon", "cwd": "/pub"}
    assert [r for _, r in watcher.ends] == ["verdict"]


def test_layers_leaving_from_the_middle_keep_the_others_order_and_a_watcher_stays_alone() -> None:
    """The engine links the entries of a flow's layers (dpicore.engine._Pending): one leaving in the
    middle of a packet's walk lets the walk go on to the layers after it; the deciding layer, left
    watching, no longer leads to the ones released."""
    log: list[str] = []
    a, d = Recorder("a", 10, log=log), Recorder("d", 40, log=log)
    b = Recorder("b", 20, log=log, raises=ZeroDivisionError("boom"))
    c = Recorder("c", 30, log=log, answers={2: lambda: Verdict("FTP", confidence=0.9, watch=2)})
    e = build(a, b, c, d)
    (flow,) = e.run(data_packets(6))
    assert log == ["a", "b", "c", "d", "a", "c", "c", "c"]
    assert [r for _, r in a.ends] == ["decided"] and [r for _, r in b.ends] == ["error"]
    assert [r for _, r in c.ends] == ["verdict"] and [r for _, r in d.ends] == ["decided"]
    assert flow.verdict.protocol == "FTP" and flow.pending is None


def test_watch_also_works_in_all_layers_mode() -> None:
    watcher = Recorder("w", 10, answers={
        1: lambda: Verdict("FTP", confidence=0.9, metadata={"user": "anon"}, watch=2),
        2: lambda: Verdict("FTP", metadata={"cwd": "/pub"}),
    })
    other = Recorder("other", 20)
    (flow,) = build(watcher, other, all_layers=True).run(data_packets(6))
    assert watcher.calls == 3, "the verdict's packet plus two watched ones"
    assert other.calls > 0, "every layer still runs in all-layers mode"
    mine = [v for v in flow.verdicts if v.source == "w"]
    assert len(mine) == 1 and mine[0].metadata == {"user": "anon", "cwd": "/pub"}
    assert [r for _, r in watcher.ends] == ["verdict"]


@pytest.mark.parametrize("all_layers", [False, True], ids=["first verdict", "all layers"])
def test_watch_for_shows_the_watching_layer_only_payloads_its_pattern_finds(all_layers: bool) -> None:
    """Payloads the pattern does not find are not shown, but count against ``watch`` as shown ones do
    (test_fastpath holds the batch path, which counts them inline, equal)."""
    watcher = Recorder("w", 10, answers={
        1: lambda: Verdict("FTP", confidence=0.9, watch=5, watch_for=re.compile(rb"p00[357]")),
        2: lambda: Verdict("FTP", metadata={"seen": 3}),
    })
    other = Recorder("other", 20)
    (flow,) = build(watcher, other, all_layers=all_layers).run(data_packets(9))
    assert watcher.payloads == [b"p000", b"p003", b"p005"], "p007: p001 to p005 used up the watch of 5"
    assert flow.c2s_packets == 9
    mine = [v for v in flow.verdicts if v.source == "w"]
    assert len(mine) == 1 and mine[0].metadata == {"seen": 3}
    assert [r for _, r in watcher.ends] == ["verdict"]
    assert other.calls == (9 if all_layers else 0)


def test_a_watch_pattern_broken_after_the_verdict_costs_the_layer_the_flow_not_the_run() -> None:
    """watch_for is checked when the layer returns its Verdict; a layer that then makes it a text pattern
    (which cannot search bytes) gets an error on the flow, as for an exception."""
    verdict = Verdict("FTP", confidence=0.9, watch=5, watch_for=re.compile(rb"p00[357]"))
    watcher = Recorder("w", 10, answers={1: lambda: verdict})
    e = build(watcher)
    first, *rest = data_packets(4)
    e.feed(first)
    verdict.watch_for = re.compile("p")  # type: ignore[assignment]
    for p in rest:
        e.feed(p)
    (flow,) = e.flush()
    assert flow.verdict.protocol == "FTP" and flow.c2s_packets == 4
    (error,) = flow.errors
    assert error.startswith("w: dpi_classify raised TypeError: watches for re.compile('p')")
    assert [r for _, r in watcher.ends] == ["error"] and watcher.payloads == [b"p000"]


@pytest.mark.parametrize("all_layers", [False, True], ids=["first verdict", "all layers"])
@pytest.mark.parametrize("change", ["confidence", "metadata"])
def test_a_verdict_changed_after_it_was_returned_is_the_layer_s_error(change: str, all_layers: bool) -> None:
    """A layer keeps a reference to the Verdict it returned and changes it later (here while watching):
    a text confidence crashed the run where the record was written, metadata that is no dict where a
    watched verdict's metadata was merged.  The flow loses that verdict, with the layer's error."""
    verdict = Verdict("FTP", confidence=0.9, watch=3, metadata={"user": "anon"})

    def spoil() -> Verdict:
        if change == "confidence":
            verdict.confidence = "high"  # type: ignore[assignment]
        else:
            verdict.metadata = None  # type: ignore[assignment]
        return Verdict("FTP", metadata={"cwd": "/"})

    watcher = Recorder("w", 10, answers={1: lambda: verdict, 2: spoil})
    other = Recorder("other", 20, answers={1: lambda: Verdict("SSH", confidence=0.6)})
    e = build(watcher, other, all_layers=all_layers)
    (flow,) = e.run(data_packets(5))
    what = "confidence is 'high', not a number in [0, 1]" if change == "confidence" else \
        "metadata is a NoneType, not a dict"
    assert flow.errors == [f"w: changed a Verdict after returning it: its {what}"]
    assert all(v is not verdict for v in flow.verdicts)
    assert flow.verdict == (Verdict("SSH", "other", 0.6) if all_layers else None)
    assert e.stats.layer_errors == 1 and next(layer for layer in e.layers if layer.id == "w").errors == 1
    record = json.loads(jsonl_line(flow_record(flow, all_layers)))  # the record is written
    assert record["metadata"]["errors"] == flow.errors


def test_flow_end_is_called_exactly_once_per_layer_and_flow() -> None:
    layers = [Recorder("a", 10, answers={2: lambda: Verdict("HTTP", confidence=0.9)}),
              Recorder("b", 20, max_packets=1), Recorder("c", 30),
              Recorder("d", 40, answers={1: lambda: Verdict("FTP", confidence=0.9, watch=5)})]
    pk = (data_packets(3, sport=1) + tcp_session(t0=2.0) + data_packets(1, t0=3.0, sport=3)
          + [packet(4.0, sport=4, flags=SYN)])
    flows = list(build(*layers, max_flows=2).run(pk))
    assert len(flows) == 4
    for layer in layers:
        assert layer.news == 4
        assert sorted(f for f, _ in layer.ends) == sorted(id(f) for f in flows), layer.id
    assert {r for _, r in layers[2].ends} <= {"decided", "evicted", "eof", "fin"}


def test_a_bare_unknown_is_one_frozen_object_every_flow_shares() -> None:
    """A flow keeps a layer's "not ours" as long as it lives (the record names its source): the engine
    keeps one object per layer and confidence for every flow instead of 160 bytes in each.  Changing
    it is refused (it would change every such flow's record); one with details stays the layer's own."""
    import pickle

    import attrs

    from dpicore import SharedVerdict

    answers = {1: lambda: Verdict("unknown", confidence=0.0)}  # the layer's own spelling, no source
    flows = list(build(Recorder("bare", answers=answers)).run(data_packets(1, sport=1) + data_packets(1, sport=2)))
    a, b = (f.verdict for f in flows)
    assert a is b and type(a) is SharedVerdict
    assert a == Verdict("Unknown", "bare", 0.0) and Verdict("Unknown", "bare", 0.0) == a
    assert a != Verdict("Unknown", "bare", 0.1)
    with pytest.raises(TypeError, match="shared by every flow"):
        a.metadata["note"] = 1
    with pytest.raises(TypeError, match="shared by every flow"):
        a.metadata.update(note=1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.protocol = "HTTP"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(a)) == a
    mine = Verdict(a.protocol, a.source, a.confidence)  # what the message tells a caller to do
    mine.metadata["note"] = 1
    assert a.metadata == {} and mine == Verdict("Unknown", "bare", 0.0, metadata={"note": 1})

    detailed = {1: lambda: Verdict("Unknown", confidence=0.0, metadata={"why": "short"})}
    c, d = (f.verdict for f in build(Recorder("detailed", answers=detailed)).run(
        data_packets(1, sport=1) + data_packets(1, sport=2)))
    assert c is not d and type(c) is Verdict and c.metadata == {"why": "short"}


def test_a_bare_unknown_is_shared_only_when_the_record_stays_the_same() -> None:
    """A layer's Verdict subclass (it may write more), an int confidence and -0.0 (the record writes
    them as 0 and -0.0) stay the layer's own; a SharedVerdict a layer returns (one it read from a
    flow) is taken as a copy, not assigned to (it is frozen: that was an exception out of the run)."""
    import attrs

    from dpicore import SharedVerdict
    from dpicore.model import shared_verdict
    from dpicore.output import flow_record

    @attrs.define(slots=True)
    class Reasoned(Verdict):
        reason: str = ""

    answers: list[Any] = [Reasoned("Unknown", confidence=0.0, reason="short"), Verdict("Unknown", confidence=0),
                          Verdict("Unknown", confidence=-0.0), SharedVerdict("unknown", "", 0.0),
                          shared_verdict("Unknown", "elsewhere", 0.5)]
    it = iter(answers)
    layer = Recorder("odd", answers={1: lambda: next(it)})
    flows = sorted(build(layer).run([p for i in range(5) for p in data_packets(1, sport=i + 1)]),
                   key=lambda f: f.client_port)
    got = [f.verdict for f in flows]
    assert type(got[0]) is Reasoned and got[0].reason == "short"
    assert [flow_record(f)["confidence"] for f in flows[1:3]] == [0, -0.0]
    assert [type(v) for v in got[1:3]] == [Verdict, Verdict]
    assert got[3] == Verdict("Unknown", "odd", 0.0) and got[4] == Verdict("Unknown", "elsewhere", 0.5)
    assert not flows[3].errors and not flows[4].errors


def test_bare_unknowns_shared_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer whose Unknowns vary in confidence gets its own objects past the bound."""
    import dpicore.engine

    monkeypatch.setattr(dpicore.engine, "SHARED_BARE", 2)
    confidences = iter([0.1, 0.2, 0.3, 0.3])
    layer = Recorder("varied", answers={1: lambda: Verdict("Unknown", confidence=next(confidences))})
    flows = list(build(layer).run([p for i in range(4) for p in data_packets(1, sport=i + 1)]))
    kinds = [type(f.verdict).__name__ for f in sorted(flows, key=lambda f: f.client_port)]
    assert kinds == ["SharedVerdict", "SharedVerdict", "Verdict", "Verdict"]
    assert [f.verdict.confidence for f in sorted(flows, key=lambda f: f.client_port)] == [0.1, 0.2, 0.3, 0.3]


def test_flow_without_layers_is_unknown_and_costs_nothing() -> None:
    (flow,) = build().run(data_packets(3))
    assert flow.verdict is None and flow.final and not flow.pending


def test_payloads_kept_are_bounded() -> None:
    seen: list[int] = []

    class Peek(Recorder):
        @hookimpl
        def dpi_classify(self, flow: Flow) -> None:
            seen.append(len(flow.payloads))

    (flow,) = build(Peek("peek", 10, max_packets=100), max_payloads=3).run(data_packets(6))
    assert seen == [1, 2, 3, 3, 3, 3]
    assert flow.payloads == [], "payloads are released when the flow ends"


@pytest.mark.parametrize("first_reads", [True, False])
def test_payloads_are_kept_only_while_a_layer_that_reads_them_looks(first_reads: bool) -> None:
    """LayerInfo.reads_payloads=False (nDPI, ML, libprotoident: they keep what they need from each
    packet): once no layer still looking at a flow reads Flow.payloads, the engine keeps none.  A flow
    nDPI went on inspecting after the heuristics layer left kept them for nobody."""
    seen: dict[str, list[int]] = {"first": [], "second": []}

    class Peek(Recorder):
        @hookimpl
        def dpi_classify(self, flow: Flow) -> None:
            assert type(flow.payloads) is list  # also while none are kept
            seen[self.id].append(len(flow.payloads))

    first = Peek("first", 10, max_packets=2, reads_payloads=first_reads)
    second = Peek("second", 20, max_packets=100, reads_payloads=not first_reads)
    (flow,) = build(first, second).run(data_packets(5))
    if first_reads:  # the reader leaves on its budget with packet 2, before the other layer gets it
        assert seen == {"first": [1, 2], "second": [1, 0, 0, 0, 0]}
    else:  # the reader stays: every payload is kept for it
        assert seen == {"first": [1, 2], "second": [1, 2, 3, 4, 5]}
    assert flow.payloads == []
    (alone,) = build(Peek("first", 10, reads_payloads=False)).run(data_packets(3))
    assert seen["first"][2:] == [0, 0, 0], "a flow only non-readers look at keeps none from the start"


def test_no_payloads_are_kept_for_a_reader_that_failed_to_start_on_the_flow() -> None:
    """A layer that reads Flow.payloads but whose dpi_flow_new raised does not look at the flow: only
    the layers that started on it decide whether its payloads are kept (they were kept for nobody)."""
    seen: list[int] = []

    class Broken(Recorder):
        @hookimpl
        def dpi_flow_new(self, flow: Flow, packet: Any) -> dict:
            raise RuntimeError("no state")

    class Peek(Recorder):
        @hookimpl
        def dpi_classify(self, flow: Flow) -> None:
            seen.append(len(flow.payloads))

    (flow,) = build(Broken("reader", 10), Peek("other", 20, reads_payloads=False)).run(data_packets(3))
    assert seen == [0, 0, 0]
    assert flow.errors == ["reader: dpi_flow_new raised RuntimeError: no state"]


@pytest.mark.parametrize("how", ["verdict", "all left", "watched"])
def test_a_decided_flow_lets_its_payloads_go_while_it_lives(how: str) -> None:
    """Once no layer looks at a flow (a confident verdict, or every layer left), its payloads (and
    the sequence numbers kept to spot retransmitted payloads) go at once, not at its end: a decided
    flow can live for minutes.  Layers leaving on the decision still
    see them in dpi_flow_end, and a layer watching on after its verdict keeps them."""
    ends: list[int] = []

    class Leaver(Recorder):
        @hookimpl
        def dpi_flow_end(self, flow: Flow) -> None:
            ends.append(len(flow.payloads))

    answers = {"verdict": {2: lambda: Verdict("HTTP", confidence=0.9)}, "all left": {2: lambda: Verdict("Unknown")},
               "watched": {2: lambda: Verdict("FTP", confidence=0.9, watch=10)}}[how]
    e = build(Recorder("decider", 10, answers=answers), Leaver("leaver", 20, max_packets=2 if how == "all left" else 9))
    for pkt in data_packets(4):
        e.feed(pkt)
    (flow,) = e.table.flows.values()
    assert ends == [2], "the leaving layer read the payloads in dpi_flow_end"
    if how == "watched":
        assert flow.final and len(flow.payloads) == 4, "the watching layer still has every payload"
        assert flow.notes, "and the sequence numbers that tell a retransmission"
    else:
        assert flow.final and not flow.pending and flow.payloads == []
        assert flow.notes == {}, "the sequence numbers go too"


def test_flows_ended_by_the_end_of_input_are_let_go_one_by_one() -> None:
    """drained() (what the capture paths use) ends the live flows one at a time: a flow the caller has
    written and dropped is freed before the next ends, so the end of a scan's capture needs no memory
    for all its ended flows at once; flush() is the same flows as a list."""
    import gc

    def alive() -> int:  # Flow has no weak-reference slot: count the live ones
        gc.collect()
        return sum(type(o) is Flow for o in gc.get_objects())

    e = build(Recorder("a", 10))
    for i in range(50):
        e.feed(packet(1.0 + i / 100, sport=20000 + i, payload=b"x"))
    before = alive()
    counts = []
    for flow in e.drained():
        del flow  # the generator holds it until the next one ends; the one before is gone by then
        counts.append(alive())
    assert counts == [before - n for n in range(50)] and alive() == before - 50
    for i in range(3):
        e.feed(packet(2.0 + i, sport=30000 + i, payload=b"y"))
    assert [f.client_port for f in e.flush()] == [30000, 30001, 30002]


@pytest.mark.parametrize("bad", [
    lambda: Verdict("HTTP", confidence=5.0), lambda: Verdict("HTTP", confidence=float("nan")),
    lambda: Verdict("HTTP", confidence="0.9"), lambda: Verdict("HTTP", watch="2"),  # type: ignore[arg-type]
    lambda: Verdict(42), lambda: Verdict(""), lambda: Verdict("HTTP", app=b"x"),  # type: ignore[arg-type]
    lambda: Verdict("HTTP", category=["web"]), lambda: Verdict("HTTP", metadata=["a"]),  # type: ignore[arg-type]
    lambda: Verdict("HTTP", watch=2, watch_for=re.compile("227")),  # type: ignore[arg-type]
    lambda: Verdict("HTTP", watch=2, watch_for=b"227"),  # type: ignore[arg-type]
], ids=["confidence 5", "confidence nan", "confidence str", "watch str", "protocol int", "protocol empty",
        "app bytes", "category list", "metadata list", "watch_for str pattern", "watch_for bytes"])
def test_a_verdict_the_engine_cannot_use_is_the_layer_s_error(bad: Any) -> None:
    """A Verdict with fields of the wrong type or range (which once stopped the run with a traceback,
    or reached the record as invalid JSON) costs its layer the flow, like an exception."""
    broken = Recorder("broken", 10, answers={1: bad})
    good = Recorder("good", 20, answers={1: lambda: Verdict("DNS", confidence=0.9)})
    (flow,) = build(broken, good).run(data_packets(2))
    assert flow.verdict.protocol == "DNS" and flow.verdict.source == "good"
    (error,) = flow.errors
    assert error.startswith("broken: dpi_classify raised TypeError: returned a Verdict whose")
    assert [r for _, r in broken.ends] == ["error"]


def test_a_layer_calling_sys_exit_costs_it_the_flow_not_the_run() -> None:
    quitter = Recorder("quitter", 10, raises=SystemExit(0))
    good = Recorder("good", 20, answers={1: lambda: Verdict("DNS", confidence=0.9)})
    flows = list(build(quitter, good).run(data_packets(2, sport=1) + data_packets(2, t0=3.0, sport=2)))
    assert [f.verdict.protocol for f in flows] == ["DNS", "DNS"]
    assert all(f.errors == ["quitter: dpi_classify raised SystemExit: 0"] for f in flows)


def test_decided_flows_share_what_recurs_and_keep_their_one_verdict_without_a_list() -> None:
    """A decided flow lives on with its verdict: the metadata text that recurs across flows (a host, a
    user agent) is one object for all of them, so are the addresses, and a flow's only verdict is
    kept without a list (each was ~0.1-0.2 KB of a million flows).  What a reader sees is unchanged."""
    import dpicore.engine as engine_module

    def answer() -> Verdict:
        # Its own str objects, as a layer decoding each flow's own packet makes them.
        return Verdict("HTTP", confidence=0.9, metadata={"host": "".join(["example", ".org"]), "n": 1})

    e = build(Recorder("decider", 10, answers={1: answer}))
    flows = [f for sport in (40001, 40002, 40003) for f in e.run(data_packets(1, sport=sport))]
    hosts = [f.verdict.metadata["host"] for f in flows]
    assert hosts == ["example.org"] * 3 and hosts[0] is hosts[1] is hosts[2]
    assert flows[0].server is flows[1].server is flows[2].server and flows[0].client is flows[2].client
    assert len({id(f.key.addr_a) for f in flows}) == 1 and len({id(f.key.addr_b) for f in flows}) == 1
    assert type(flows[0]._verdicts) is Verdict, "one verdict, no list around it"
    assert flows[0].verdicts == [flows[0].verdict] and type(flows[0]._verdicts) is list, "a list when asked for"
    # The table of shared strings is bounded: text that never recurs cannot grow it without end.
    e._strings.clear()
    for i in range(engine_module.SHARED_STRINGS + 10):
        e._share({"x": f"v{i}"})
    assert len(e._strings) <= engine_module.SHARED_STRINGS
    long = "y" * (engine_module.SHARED_LENGTH + 1)
    e._share({"x": long})
    assert long not in e._strings


def test_a_second_verdict_makes_the_list() -> None:
    weak = Recorder("weak", 10, answers={1: lambda: Verdict("DNS", confidence=0.3)})
    other = Recorder("other", 20, answers={1: lambda: Verdict("SSH", confidence=0.4)})
    third = Recorder("third", 30, answers={1: lambda: Verdict("HTTP", confidence=0.9)})
    e = build(weak, other, third)
    (flow,) = e.run(data_packets(1))
    assert [v.protocol for v in flow.verdicts] == ["DNS", "SSH", "HTTP"] and flow.verdict.protocol == "HTTP"


def test_a_layer_that_fails_and_names_the_flow_at_its_end_decides_it_there() -> None:
    """A layer whose dpi_classify raises leaves the flow, and a confident verdict from its dpi_flow_end
    decides the flow then: the layers after it get their one dpi_flow_end ("decided") and no packet after
    it (the loop over the layers went on, and asked a later one to classify after its end)."""

    class NamesAtEnd(Recorder):
        @hookimpl
        def dpi_flow_end(self, flow: Flow, reason: str) -> Verdict:
            self.ends.append((id(flow), reason))
            return Verdict("HTTP", confidence=1.0)

    log: list[str] = []
    failing = NamesAtEnd("a", 10, raises=RuntimeError("boom"), log=log)
    later = Recorder("b", 20, log=log)
    flows = list(build(failing, later).run(data_packets(3)))
    assert len(flows) == 1 and flows[0].verdict is not None and flows[0].verdict.protocol == "HTTP"
    assert log == ["a"] and later.calls == 0
    assert [reason for _, reason in later.ends] == ["decided"]
    assert flows[0].errors == ["a: dpi_classify raised RuntimeError: boom"]
