"""The numpy batch path (dpicore.fastpath) against the packet-by-packet path it must equal.

Both paths run the installed layers on real captures — the shared nDPI
corpus and the project's real-client recordings — and every flow must come
out with the same record and the same end reason.  Only the order in which
ended flows are reported may differ (the batch path scans for timed-out
flows at batch boundaries), so flows are compared as multisets.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

import attrs
import pytest

from dpicore import Classifier
from dpicore.config import Config
from dpicore.model import Flow
from dpicore.output import flow_record

CAPTURES = Path(__file__).parent / "captures"


def flows_of(flows: Iterable[Flow]) -> Counter[str]:
    """Each flow as canonical JSON: its record plus the reason it ended."""
    return Counter(json.dumps({**flow_record(f), "end": f.end_reason}, sort_keys=True) for f in flows)


def both_paths(files: list[Path], layers: list[str]) -> tuple[Counter[str], Counter[str]]:
    config = Config().with_layers(layers)
    with Classifier(config=config) as batched, Classifier(config=config) as single:
        fast = flows_of(f for path in files for f in batched.classify_pcap(path, batched=True))
        slow = flows_of(f for path in files for f in single.classify_pcap(path, batched=False))
    return fast, slow


def differences(fast: Counter[str], slow: Counter[str]) -> list[str]:
    return [f"only batched: {x}" for x in fast - slow][:5] + [f"only packet path: {x}" for x in slow - fast][:5]


@pytest.mark.parametrize("layers", [["heuristics"], ["heuristics", "ndpi"]])
def test_corpus_batched_equals_packet_by_packet(corpus: Path, layers: list[str]) -> None:
    files = sorted((corpus / "pcap").iterdir())
    fast, slow = both_paths(files, layers)
    assert sum(slow.values()) > 900
    assert fast == slow, differences(fast, slow)


def test_realclients_batched_equals_packet_by_packet() -> None:
    files = sorted((CAPTURES / "realclients").glob("*.pcap"))
    assert len(files) > 10
    fast, slow = both_paths(files, ["heuristics", "ndpi"])
    assert sum(slow.values()) > 50
    assert fast == slow, differences(fast, slow)


# -- synthetic traffic that stresses the batch path's timing --------------------------------
def _mixed_traffic(seed: int, sessions: int = 400, idle: bool = False) -> list[tuple[float, bytes]]:
    """TCP sessions (closed by FIN/FIN, by RST or not at all, 5-tuples reused before and after the
    closing timeout, stragglers after the close), UDP exchanges, IPv6 and 802.1Q-tagged ones, gaps
    from milliseconds to past the idle timeout, and one jump back of the capture clock."""
    import random

    import dpkt

    from tests.helpers.frames import ACK, FIN, PSH, RST, SYN, eth, ip6, tcp, tcp4, udp4

    rnd = random.Random(seed)
    events: list[tuple[float, int, bytes]] = []
    t = 1_600_000_000.0
    for n in range(sessions):
        t += rnd.choice([0.001, 0.01, 0.2, 0.7, 1.5, 3.0, 6.0, 12.0]) * rnd.random()
        tags = [(0x8100, rnd.randrange(1, 4))] if rnd.random() < 0.3 else []
        client = f"10.0.{rnd.randrange(4)}.{rnd.randrange(1, 6)}"
        server = f"10.9.0.{rnd.randrange(1, 4)}"
        cport = 40000 + rnd.randrange(6)  # few ports: 5-tuples get reused
        v6 = rnd.random() < 0.1
        at = t

        def add(frm_client: bool, flags: int, payload: bytes = b"", seq: int = 1, udp: bool = False) -> None:
            nonlocal at
            at += rnd.choice([0.0005, 0.003, 0.05, 0.4, 2.0, 5.5, 9.0]) * rnd.random()
            src, sp, dst, dp = (client, cport, server, 80) if frm_client else (server, 80, client, cport)
            if udp:
                frame = udp4(src, sp, dst, 53, payload) if frm_client else udp4(src, 53, dst, dp, payload)
            elif v6:
                frame = ip6(f"2001:db8::{src.split('.')[-1]}", f"2001:db9::{dst.split('.')[-1]}",
                            tcp(sp, dp, flags, seq, 0, payload), dpkt.ip.IP_PROTO_TCP)
                events.append((at, len(events), eth(frame, etype=0x86DD, tags=tags)))
                return
            else:
                frame = tcp4(src, sp, dst, dp, flags, payload, seq)
            events.append((at, len(events), eth(frame, tags=tags)))

        if rnd.random() < 0.2:
            q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
            for _ in range(rnd.randrange(1, 4)):
                add(True, 0, q, udp=True)
                add(False, 0, q[:2] + b"\x81\x80" + q[4:], udp=True)
            continue
        cs, ss = rnd.randrange(1 << 32), rnd.randrange(1 << 32)
        add(True, SYN, seq=cs)
        add(False, SYN | ACK, seq=ss)
        add(True, ACK, seq=cs + 1)
        if idle and rnd.random() < 0.1:  # idle before the request: more payload-less packets than a layer holds
            for _ in range(rnd.randrange(5, 30)):
                add(rnd.random() < 0.5, ACK, seq=cs + 1)
        req = b"GET /%d HTTP/1.1\r\nHost: example.com\r\n\r\n" % n
        add(True, PSH | ACK, req, cs + 1)
        cs += 1 + len(req)
        for _ in range(rnd.randrange(0, 6)):
            body = b"x" * rnd.randrange(0, 300)
            add(False, ACK | (PSH if body else 0), body, ss + 1)
            ss += len(body)
        add(True, ACK, b"", cs)
        end = rnd.random()
        if end < 0.45:
            add(rnd.random() < 0.5, FIN | ACK, seq=cs)
            add(True, FIN | ACK, seq=cs)
            add(False, FIN | ACK, seq=ss + 1)
            for _ in range(rnd.randrange(0, 3)):  # trailing ACKs, maybe after the closing timeout
                add(rnd.random() < 0.5, ACK, b"z" * rnd.randrange(0, 2), cs + 1)
        elif end < 0.7:
            add(rnd.random() < 0.5, RST | ACK, seq=cs)
            if rnd.random() < 0.5:
                add(False, ACK, b"late", ss + 1)
        elif end < 0.8:
            add(True, FIN | ACK, seq=cs)  # half closed
    events.sort()
    # One jump back of the capture clock (as some captures have), then on from there.
    cut = len(events) * 2 // 3
    back = events[cut][0] - 30.0
    events = events[:cut] + [(ts - events[cut][0] + back, k, f) for ts, k, f in events[cut:]]
    return [(ts, frame) for ts, _, frame in events]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("layers", [["heuristics"], ["heuristics", "ndpi"], ["ndpi", "ml"]])
def test_synthetic_timeouts_batched_equals_packet_by_packet(tmp_path: Path, seed: int, layers: list[str]) -> None:
    """Also with layers that want payload-less packets (nDPI, ML): a new flow keeps them until its layers
    start, which the batch path does inline (engine.holding), up to the hold and past it."""
    from tests.helpers.frames import pcap_bytes

    path = tmp_path / "mixed.pcap"
    path.write_bytes(pcap_bytes(_mixed_traffic(seed, idle=True)))
    config = attrs.evolve(Config().with_layers(layers), idle_timeout=8.0, active_timeout=40.0)
    with Classifier(config=config) as batched, Classifier(config=config) as single:
        fast = flows_of(batched.classify_pcap(path, batched=True))
        slow = flows_of(single.classify_pcap(path, batched=False))
    reasons = Counter(json.loads(x)["end"] for x in slow.elements())
    assert {"fin", "rst", "idle"} <= set(reasons), reasons
    assert fast == slow, differences(fast, slow)


def _numpy_vs_scalar_packets(files: list[Path]) -> Counter[int]:
    """Every frame numpy decodes, built into a Packet from the columns, equals the scalar decoder's;
    returns how many were checked per IP version."""
    from dpicore.decode.batch import batches, decode_headers
    from dpicore.decode.packets import Decoder
    from dpicore.fastpath import _Columns, _Flows

    import numpy as np

    checked: Counter[int] = Counter()
    for path in files:
        decoder = Decoder()
        for batch in batches(str(path)):
            h = decode_headers(batch)
            times = batch.ts.tolist()
            flows = _Flows(h, ~h.ok)
            every = _Columns(batch, h, flows, np.arange(len(batch)), times)
            ok = h.ok.nonzero()[0]
            # A -j shard's columns hold its own frames only: row c is frame rows[c].
            rows = ok[1::2]
            some = _Columns(batch, h, flows, rows, times)
            for j in ok.tolist():
                want = decoder.decode(batch.linktype, batch.frame(j), times[j], int(batch.wire[j]), batch.first + j)
                assert every.packet(j) == want, (path, batch.first + j)
                checked[want.ip_version] += 1
            for c, j in enumerate(rows.tolist()):
                want = decoder.decode(batch.linktype, batch.frame(j), times[j], int(batch.wire[j]), batch.first + j)
                assert some.packet(c) == want, (path, batch.first + j, "rows")
                assert (some.flags[c], some.sport[c], some.times[c]) == (every.flags[j], every.sport[j], times[j])
                # From the key's first end: the lower (address, port), as FlowKey.of orders them.
                assert some.is_a[c] is every.is_a[j] is ((want.src, want.sport) <= (want.dst, want.dport))
    return checked


def test_packets_from_columns_equal_the_scalar_decoder(corpus: Path) -> None:
    files = sorted((corpus / "pcap").iterdir()) + sorted((CAPTURES / "realclients").glob("*.pcap"))
    checked = _numpy_vs_scalar_packets(files)
    assert checked[4] > 20_000 and checked[6] > 2_000, checked


def test_packets_from_columns_on_every_link_type(tmp_path: Path) -> None:
    """Link types, tags, IP and TCP options, padding, snap length, odd loopback families, damage;
    IPv6 with extension headers, fragments or a zero payload length goes to the scalar decoder
    (the batch decode, in C or numpy, must not decode it, or decode it exactly the same)."""
    from tests.helpers.frames import every_link_type, pcap_bytes

    frames = every_link_type()
    files = []
    for linktype, recs in frames.items():
        path = tmp_path / f"lt{linktype}.pcap"
        path.write_bytes(pcap_bytes([(1_600_000_000 + i * 0.5, f, len(f) + 3) for i, f in enumerate(recs)], linktype))
        files.append(path)
    checked = _numpy_vs_scalar_packets(files)
    assert checked[4] >= 60 and checked[6] >= 60, checked


def test_numpy_leaves_tiny_and_odd_ipv6_frames_alone(tmp_path: Path) -> None:
    """Frames shorter than the headers they announce, alone in a capture (the smallest buffers the
    decoder clips its reads into), are left to the scalar decoder, which reports them."""
    from dpicore.decode.batch import batches, decode_headers
    from dpicore.decode.packets import DLT_RAW
    from tests.helpers.frames import eth, pcap_bytes

    for linktype, frame in ((DLT_RAW, b"\x60"), (DLT_RAW, b"\x60" + b"\x00" * 38), (1, eth(b"\x60\x00", 0x86DD))):
        path = tmp_path / "tiny.pcap"
        path.write_bytes(pcap_bytes([(1.0, frame)], linktype))
        [batch] = list(batches(str(path)))
        assert not decode_headers(batch).ok.any()


def test_header_rows_are_the_bytes_at_each_offset_zero_past_the_buffer() -> None:
    """decode_headers reads every field from rows of bytes gathered at each frame's offsets; a row
    that runs past the buffer's end (a short last frame, a garbage offset) must read zeros there,
    never another place in the buffer."""
    import numpy as np

    from dpicore.decode.batch import _rows

    rng = np.random.default_rng(7)
    for size in (0, 1, 13, 22, 40, 41, 100, 5000):
        b = rng.integers(0, 256, size, dtype=np.uint8)
        for width in (14, 22, 40):
            inside = rng.integers(0, max(size - width, 0) + 1, 50) if size >= width else np.zeros(0, np.int64)
            anywhere = np.concatenate([rng.integers(0, size + 60, 200), [0, size, max(size - width, 0)]])
            edges = [np.array([a], dtype=np.int64) for a in range(max(size - width - 1, 0), size + 2)]
            for at in (inside.astype(np.int64), anywhere.astype(np.int64), *edges):
                rows = _rows(b, at, width)
                assert rows.shape == (len(at), width) and rows.dtype == np.uint8
                for a, row in zip(at.tolist(), rows):
                    assert bytes(row) == bytes(b[a:a + width]).ljust(width, b"\0"), (size, width, a)


def test_shard_hash_from_columns_equals_shard_of_the_key(corpus: Path) -> None:
    """A worker drops the other shards' frames in numpy (fastpath.shards) and the rest by their key
    (fastpath.shard_of): both must put a flow in the same shard."""
    from dpicore.decode.batch import batches, decode_headers
    from dpicore.decode.packets import Decoder
    from dpicore.fastpath import shard_of, shards
    from dpicore.model import FlowKey

    checked = Counter()
    for path in sorted((corpus / "pcap").iterdir()):
        decoder = Decoder()
        for batch in batches(str(path)):
            h = decode_headers(batch)
            ok = h.ok.nonzero()[0].tolist()
            for n in (2, 3, 7):
                col = shards(h, n).tolist()
                for j in ok:
                    pkt = decoder.decode(batch.linktype, batch.frame(j), 0.0, 0, 0)
                    assert col[j] == shard_of(FlowKey.of(pkt), n), (path, batch.first + j)
                    checked[n, col[j]] += 1
    assert len(checked) == 2 + 3 + 7 and min(checked.values()) > 1000  # every shard gets flows


def test_flows_between_two_hosts_share_a_shard() -> None:
    """A shard is an address pair (and VLAN): an FTP data connection must meet its control connection
    whatever their ports and transports, while distinct host pairs spread over the shards."""
    from dpicore.fastpath import shard_of
    from dpicore.model import FlowKey

    def key(proto: int, a: int, pa: int, b: int, pb: int, vlan: int = 0) -> FlowKey:
        return FlowKey(proto, vlan, a.to_bytes(4, "big"), pa, b.to_bytes(4, "big"), pb)

    client, server = 0x0A000001, 0xC0A80102
    for n in (2, 3, 7):
        control = shard_of(key(6, client, 40000, server, 21), n)
        assert {shard_of(key(proto, client, 40000 + i, server, 1024 + 7 * i), n)
                for proto in (6, 17) for i in range(200)} == {control}
    per_shard = Counter(shard_of(key(6, 0x0A000000 + i, 5000, server, 80), 2) for i in range(1000))
    assert min(per_shard.values()) > 400  # 1,000 clients of one server, over 2 shards
    per_vlan = Counter(shard_of(key(6, client, 5000, server, 80, vlan), 2) for vlan in range(1, 1001))
    assert min(per_vlan.values()) > 400  # one host pair copied on 1,000 VLANs


@pytest.mark.parametrize("mixing", ["real", "colliding"])
def test_unique_rows_equal_numpys(monkeypatch: pytest.MonkeyPatch, mixing: str) -> None:
    """_Flows finds a batch's flows by a 64-bit mix of each row; rows whose mixes collide (forced here
    by a multiplier of 0, which keeps only the last column) must still come out as np.unique's."""
    import numpy as np

    from dpicore import fastpath

    if mixing == "colliding":
        monkeypatch.setattr(fastpath, "_K_ADDR", 0)
    rng = np.random.default_rng(7)
    for trial in range(60):
        n, k, width = int(rng.integers(1, 3000)), int(rng.integers(1, 300)), (3, 7)[trial % 2]
        distinct = rng.integers(-(1 << 62), 1 << 62, size=(k, width))
        if trial % 3 == 0:
            distinct[:, -1] = 5  # rows that differ only before the last column
        rows = np.ascontiguousarray(distinct[rng.integers(0, k, n)])
        first, inverse = fastpath._unique_rows(rows)
        _, want_first, want_inverse = np.unique(rows.view(np.dtype((np.void, width * 8))).ravel(),
                                                return_index=True, return_inverse=True)
        assert sorted(first.tolist()) == sorted(want_first.tolist())
        assert (first[inverse] == want_first[want_inverse.ravel()]).all()


@pytest.mark.parametrize("other", [False, True], ids=["alone", "with a packet that scans first"])
def test_a_straggler_at_exactly_the_close_time_joins_its_flow_on_both_paths(tmp_path: Path, other: bool) -> None:
    """A packet at exactly a closed flow's close time joins it (the flow table's rule for a packet);
    the scan for ended flows once removed the flow at that same instant, so whether the straggler
    joined or started a record of its own depended on where the once-a-second scans fell (found by
    fuzzing: the two paths, and -j 2 against -j 1, disagreed)."""
    from tests.helpers.frames import ACK, FIN, RST, eth, pcap_bytes, tcp4

    t0 = 1_700_000_000.0
    recs = [(t0, eth(tcp4("10.0.0.1", 1000, "10.0.0.2", 80, FIN | ACK))),
            (t0 + 0.1, eth(tcp4("10.0.0.3", 1000, "10.0.0.4", 80, RST))),
            (t0 + 0.5, eth(tcp4("10.0.0.2", 80, "10.0.0.1", 1000, FIN | ACK)))]
    if other:
        recs.append((t0 + 4.6, eth(tcp4("10.0.0.5", 1000, "10.0.0.6", 80, ACK))))
    recs.append((t0 + 5.1, eth(tcp4("10.0.0.3", 1000, "10.0.0.4", 80, ACK))))
    path = tmp_path / "close.pcap"
    path.write_bytes(pcap_bytes(recs))
    fast, slow = both_paths([path], ["heuristics"])
    assert fast == slow, differences(fast, slow)
    b = [json.loads(x) for x in slow if json.loads(x)["src_ip"] == "10.0.0.3"]
    assert [r["packets"] for r in b] == [2], "the straggler joined the closed flow"


@pytest.mark.parametrize("cap", [1, 3, 50])
def test_at_the_flow_cap_batched_equals_packet_by_packet(tmp_path: Path, cap: int) -> None:
    """Which flow the cap evicts depends on the order of packets across flows, which the batch path
    otherwise does not keep (it runs a batch flow by flow): a batch that may reach the cap goes
    packet by packet (found by fuzzing: about 40% of captures differed with a cap of 1 to 10)."""
    from tests.helpers.frames import pcap_bytes

    path = tmp_path / "mixed.pcap"
    path.write_bytes(pcap_bytes(_mixed_traffic(7)))
    config = attrs.evolve(Config().with_layers(["heuristics"]), idle_timeout=8.0, max_flows=cap)
    with Classifier(config=config) as batched, Classifier(config=config) as single:
        fast = flows_of(batched.classify_pcap(path, batched=True))
        slow = flows_of(single.classify_pcap(path, batched=False))
        assert batched.engine.stats.evicted == single.engine.stats.evicted > 0
    assert fast == slow, differences(fast, slow)


def _ftp_session(commands: int) -> list[tuple[float, bytes]]:
    """An FTP control connection on a port FTP is not known by: handshake, greeting, USER, ``commands``
    NOOPs and their replies (each NOOP reply arrives twice: a retransmission), then PASV and its 227
    reply (also twice, the second copy with the next reply in the same segment), then two data
    connections to the announced endpoint 10.9.0.1:50000: the first takes the announcement."""
    from tests.helpers.frames import ACK, PSH, SYN, eth, tcp4

    t = 1_700_000_000.0
    c, s = ("10.0.0.1", 40000), ("10.9.0.1", 2121)
    seq = {c: 1, s: 1}
    recs: list[tuple[float, bytes]] = []

    def send(src: tuple[str, int], dst: tuple[str, int], payload: bytes, at: int | None = None) -> None:
        nonlocal t
        t += 0.001
        recs.append((t, eth(tcp4(src[0], src[1], dst[0], dst[1], PSH | ACK, payload, seq=seq[src] if at is None else at))))
        if at is None:
            seq[src] += len(payload)

    def data(sport: int) -> None:
        nonlocal t
        t += 0.01
        recs.append((t, eth(tcp4("10.0.0.1", sport, "10.9.0.1", 50000, SYN))))
        recs.append((t + 0.001, eth(tcp4("10.0.0.1", sport, "10.9.0.1", 50000, PSH | ACK, b"\x89PNG\r\n\x1a\n", seq=2))))

    recs.append((t, eth(tcp4(c[0], c[1], s[0], s[1], SYN, seq=0))))
    recs.append((t, eth(tcp4(s[0], s[1], c[0], c[1], SYN | ACK, seq=0))))
    send(s, c, b"220 (vsFTPd 3.0.3)\r\n")
    send(c, s, b"USER anonymous\r\n")
    send(s, c, b"331 Please specify the password.\r\n")
    for _ in range(commands):
        send(c, s, b"NOOP\r\n")
        at = seq[s]
        send(s, c, b"200 NOOP ok.\r\n")
        send(s, c, b"200 NOOP ok.\r\n", at=at)
    send(c, s, b"PASV\r\n")
    reply, at = b"227 Entering Passive Mode (10,9,0,1,195,80).\r\n", seq[s]
    send(s, c, reply)
    send(s, c, b"150 Here comes the directory listing.\r\n")
    data(40001)
    send(s, c, reply + b"150 Here comes the directory listing.\r\n", at=at)  # repacketized retransmission
    data(40002)
    return recs


@pytest.mark.parametrize("commands", [3, 100, 200])
def test_a_watched_control_connection_is_shown_only_what_it_watches_for(tmp_path: Path, commands: int) -> None:
    """FTP watches its control connection for data-connection announcements (``Verdict.watch_for``): the
    batch path counts the other payloads inline, the packet path hands them to the engine, and both keep
    the same watch (256 payload packets) and the same retransmission notes, so both give the same records:
    the first data connection takes the announcement while the watch lasts; the second, after a
    retransmission that repeats it, is not taken for it."""
    from tests.helpers.frames import pcap_bytes

    path = tmp_path / "ftp.pcap"
    path.write_bytes(pcap_bytes(_ftp_session(commands)))
    fast, slow = both_paths([path], ["heuristics"])
    assert fast == slow, differences(fast, slow)
    records = {r["src_port"]: r for r in map(json.loads, slow)}
    assert records[40000]["protocol"] == "FTP" and records[40000]["packets"] == 3 * commands + 9
    watched = 2 * commands + 4  # the new payloads after the verdict (on the greeting), up to the 227
    assert records[40001]["protocol"] == ("FTP_DATA" if watched <= 256 else "Unknown")
    assert records[40002]["protocol"] == "Unknown"


def _in_small_batches(monkeypatch: pytest.MonkeyPatch, path: Path, size: int,
                      **settings: object) -> tuple[Counter[str], Counter[str]]:
    """Both paths on ``path`` with the heuristics layer, ``settings`` of its Config, and batches of ``size``
    frames (from a pipe a batch is what has arrived: a few frames)."""
    import functools

    from dpicore import fastpath
    from dpicore.decode.batch import batches

    monkeypatch.setattr(fastpath, "batches", functools.partial(batches, size=size))
    config = attrs.evolve(Config().with_layers(["heuristics"]), **settings)
    with Classifier(config=config) as batched, Classifier(config=config) as single:
        return (flows_of(batched.classify_pcap(path, batched=True)),
                flows_of(single.classify_pcap(path, batched=False)))


def test_a_batch_run_flow_by_flow_leaves_the_table_in_capture_order(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch below the flow cap runs flow by flow, in order of first packet; the table must still end
    in the order of last packets, for the cap evicts the least recently seen flow in a later batch
    (batches of a few frames, as from a pipe, evicted another flow than the packet path: found by a
    review helper).  Here A's last packet comes after B's, so B is the one the third flow evicts."""
    from tests.helpers.frames import ACK, PSH, SYN, eth, pcap_bytes, tcp4

    def seg(t: float, sport: int, dport: int, flags: int, payload: bytes = b"", back: bool = False) -> tuple:
        a, b = ("10.0.0.1", sport), ("10.9.0.1", dport)
        src, dst = (b, a) if back else (a, b)
        return (1_700_000_000.0 + t, eth(tcp4(src[0], src[1], dst[0], dst[1], flags, payload)))

    recs = [seg(0.000, 40000, 80, SYN), seg(0.001, 40000, 80, SYN | ACK, back=True),
            seg(0.002, 40001, 81, SYN), seg(0.003, 40001, 81, SYN | ACK, back=True),
            seg(0.004, 40000, 80, PSH | ACK, b"x"),  # the first batch of 5 ends here: A seen last
            seg(0.005, 40002, 82, SYN), seg(0.006, 40001, 81, PSH | ACK, b"y"), seg(0.007, 40000, 80, ACK)]
    path = tmp_path / "cap.pcap"
    path.write_bytes(pcap_bytes(recs))
    fast, slow = _in_small_batches(monkeypatch, path, 5, max_flows=2)
    assert fast == slow, differences(fast, slow)
    evicted = [json.loads(x) for x in slow if json.loads(x)["end"] == "evicted"]
    assert [r["src_port"] for r in evicted][:1] == [40001]


def test_the_table_order_a_batch_leaves_keeps_idle_scans_exact_when_the_clock_goes_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Putting a batch's flows in the order of their last packets can put a flow behind one seen later
    (the clock went back): it must be queued for the idle scans, which stop at the first flow that is
    not idle, or a later scan missed it and it ended at the end of input instead (found by a review
    helper).  X is seen at 0.0 and again at 0.2 after Y at 0.5; the scan at 1.3 ends X (idle 1 s)."""
    from tests.helpers.frames import eth, pcap_bytes, udp4

    def u(t: float, sport: int) -> tuple:
        return (1_700_000_000.0 + t, eth(udp4("10.0.0.1", sport, "10.9.0.1", 53, b"q")))

    path = tmp_path / "back.pcap"
    path.write_bytes(pcap_bytes([u(0.0, 1000), u(0.5, 2000), u(0.2, 1000), u(1.3, 3000), u(1.31, 3000),
                                 u(1.32, 3000)]))
    fast, slow = _in_small_batches(monkeypatch, path, 3, idle_timeout=1.0)
    assert fast == slow, differences(fast, slow)
    ends = {json.loads(x)["src_port"]: json.loads(x)["end"] for x in slow}
    assert ends[1000] == "idle"
