"""The compiled hot modules (dpicore.compiled, scripts/compile_core.py): used only while they match their
sources, and the same records as the sources give."""

from __future__ import annotations

import importlib.machinery
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from dpicore import compiled
from dpicore.decode.capture import CaptureReader
from tests.helpers.frames import every_link_type, pcap_bytes, pcapng_bytes

ROOT = Path(__file__).resolve().parent.parent


def _package(tmp_path: Path) -> tuple[Path, Path]:
    pkg = tmp_path / "src" / "cpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "hot.py").write_text("VALUE = 1\n")
    built = tmp_path / "built"
    built.mkdir()
    (built / "cpkg.hot.so").write_bytes(b"not loaded by these tests")
    return pkg, built


def test_finder_hands_out_a_compiled_module_only_while_its_source_is_unchanged(tmp_path: Path) -> None:
    pkg, built = _package(tmp_path)
    finder = compiled.CompiledFinder(built, {"cpkg.hot": {"file": "cpkg.hot.so",
                                                          "sha256": compiled.source_digest(pkg / "hot.py")}})
    spec = finder.find_spec("cpkg.hot", [str(pkg)])
    assert spec is not None and spec.origin == str(built / "cpkg.hot.so")
    assert isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
    assert finder.used == ["cpkg.hot"]
    assert finder.find_spec("cpkg.other", [str(pkg)]) is None  # not in the manifest: the normal import
    (pkg / "hot.py").write_text("VALUE = 2\n")  # edited after the build: the source it is
    assert finder.find_spec("cpkg.hot", [str(pkg)]) is None
    assert finder.stale == ["cpkg.hot"]


def test_a_module_written_for_cython_is_found_by_its_pyx(tmp_path: Path) -> None:
    pkg, built = _package(tmp_path)
    (pkg / "fast.pyx").write_text("def f(int x):\n    return x\n")
    (built / "cpkg.fast.so").write_bytes(b"not loaded by these tests")
    finder = compiled.CompiledFinder(built, {"cpkg.fast": {"file": "cpkg.fast.so",
                                                           "sha256": compiled.source_digest(pkg / "fast.pyx")}})
    spec = finder.find_spec("cpkg.fast", [str(pkg)])
    assert spec is not None and spec.origin == str(built / "cpkg.fast.so")
    (pkg / "fast.pyx").write_text("def f(long x):\n    return x\n")  # edited: no module (its importer falls back)
    assert finder.find_spec("cpkg.fast", [str(pkg)]) is None and finder.stale == ["cpkg.fast"]
    (pkg / "fast.pyx").unlink()  # no source at all: nothing to vouch for the build
    assert compiled.CompiledFinder(built, finder.modules).find_spec("cpkg.fast", [str(pkg)]) is None


def test_a_source_with_its_build_time_size_and_mtime_is_not_hashed(tmp_path: Path) -> None:
    pkg, built = _package(tmp_path)
    st = (pkg / "hot.py").stat()
    entry = {"file": "cpkg.hot.so", "sha256": "0" * 64, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    assert compiled.CompiledFinder(built, {"cpkg.hot": entry}).find_spec("cpkg.hot", [str(pkg)]) is not None
    # Rewritten with the same text (a checkout): another mtime, so the hash decides.
    os.utime(pkg / "hot.py", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    finder = compiled.CompiledFinder(built, {"cpkg.hot": entry})
    assert finder.find_spec("cpkg.hot", [str(pkg)]) is None and finder.stale == ["cpkg.hot"]
    entry["sha256"] = compiled.source_digest(pkg / "hot.py")
    assert compiled.CompiledFinder(built, {"cpkg.hot": entry}).find_spec("cpkg.hot", [str(pkg)]) is not None


def test_install_needs_a_readable_manifest_and_no_pure_python_request(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, compiled.CompiledFinder)])
    monkeypatch.delenv(compiled.PURE_ENV, raising=False)
    assert compiled.install(tmp_path) is None  # no manifest
    (tmp_path / compiled.MANIFEST).write_text("{not json")
    assert compiled.install(tmp_path) is None
    (tmp_path / compiled.MANIFEST).write_text(json.dumps({"modules": ["dpicore.engine"]}))
    assert compiled.install(tmp_path) is None  # not a table of modules: read as no manifest, not a crash later
    (tmp_path / compiled.MANIFEST).write_text(json.dumps({"modules": {}}))
    monkeypatch.setenv(compiled.PURE_ENV, "1")
    assert compiled.install(tmp_path) is None
    monkeypatch.setenv(compiled.PURE_ENV, "0")
    finder = compiled.install(tmp_path)
    assert finder is not None and sys.meta_path[0] is finder
    assert compiled.install(tmp_path) is finder  # once per process
    assert compiled.status().startswith("compiled modules: none")  # a manifest of nothing (no compiler)


def _compiled_core() -> None:
    """Skip unless this environment's compiled modules are built and current."""
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "compile_core.py"), "--check", "--quiet"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"no current compiled modules in this environment ({check.stdout.strip() or 'none built'}; "
                    "scripts/install.sh builds them when gcc and python3-dev are there)")


def _run(code: str, pure: bool) -> str:
    env = dict(os.environ, **{compiled.PURE_ENV: "1" if pure else "0"})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True, cwd=ROOT).stdout


def test_the_listed_modules_run_compiled() -> None:
    _compiled_core()
    names = ["dpicore.fastpath", "dpicore.flowtable", "dpi_heuristics.dispatch"]
    code = f"import importlib; print('\\n'.join(importlib.import_module(n).__file__ for n in {names!r}))"
    assert all(f.endswith(".so") for f in _run(code, pure=False).split())
    assert all(f.endswith(".py") for f in _run(code, pure=True).split())


def test_compiled_and_source_modules_write_the_same_records() -> None:
    _compiled_core()
    code = ("import sys; from dpicore.cli import main; "
            "sys.argv = ['dpi', 'classify', '-q', '-f', 'jsonl', '--all-layers', '-l', 'heuristics,ndpi,ml', "
            "'tests/captures/realclients']; main()")
    compiled_lines = _run(code, pure=False).splitlines()
    source_lines = _run(code, pure=True).splitlines()
    assert len(compiled_lines) > 50  # the 65 flows of the real-client captures
    assert sorted(compiled_lines) == sorted(source_lines)


def _frames(path: Path) -> list[tuple[float, bytes, int]]:
    """(time, frame, wire length) of each frame of the capture at ``path``, as the frame reader reads them."""
    with CaptureReader(path) as reader:
        return [(f.ts, f.data, f.wire_len) for f in reader]


def _pcap_records(path: Path, big_endian: bool) -> bytes:
    """The records of the capture at ``path`` as a pcap file in the byte order asked has them (its header off)."""
    return pcap_bytes(_frames(path), big=big_endian)[24:]


def _c_walks() -> Any:
    """dpicore.decode.batch, skipping unless it imported the walks in C."""
    from dpicore.decode import batch

    if batch.walk_pcap is None or batch.walk_pcapng is None:
        pytest.skip("dpicore/decode/cwalk.pyx is not built here (scripts/install.sh builds it when gcc and "
                    "python3-dev are there; DPI_PURE_PYTHON turns it off)")
    return batch


def test_the_record_walk_in_c_finds_what_the_python_walk_finds() -> None:
    batch = _c_walks()
    rng = random.Random(7)
    bufs = []
    for capture in sorted((ROOT / "tests" / "captures" / "realclients").glob("*.pcap"))[:6]:
        for big in (False, True):
            records = _pcap_records(capture, big)
            bufs.append((records, big))
            bufs.extend((records[:cut], big) for cut in rng.sample(range(len(records)), 40))  # cut short
            damaged = bytearray(records)
            for _ in range(5):  # lengths that point past the end, or nowhere sensible
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            bufs.append((bytes(damaged), big))
    bufs += [(b"", False), (bytes(15), True), (bytes(16), False), (b"\xff" * 64, False), (rng.randbytes(4096), True)]
    for buf, big in bufs:
        caplen = struct.Struct((">" if big else "<") + "8xI").unpack_from
        starts, pos = batch.walk_pcap(buf, big)
        assert (starts.tolist(), pos) == batch._walk(buf, caplen)


def test_the_pcapng_walk_in_c_finds_what_the_python_walk_finds() -> None:
    batch = _c_walks()
    rng = random.Random(11)
    capture = ROOT / "tests" / "captures" / "realclients" / "https_curl_sni.pcap"
    frames = [(0, ts, data) for ts, data, _ in _frames(capture)]  # on interface 0
    bufs = []
    for big in (False, True):
        o = ">" if big else "<"
        whole = pcapng_bytes([([(1, None)], frames)], big=big)
        odd = [struct.pack(o + "II", t, 12 + len(body)) + body + struct.pack(o + "I", 12 + len(body))
               for t, body in ((5, bytes(20)), (4, bytes(8)), (0x40000BAD, bytes(4)), (0xBAD, b""))]
        # Every kind of block the walk stops at or steps over, and lengths it must refuse.
        kinds = [*odd, *(struct.pack(o + "II", t, 28) + bytes(20) for t in sorted(batch._NOT_WALKED)),
                 struct.pack(o + "II", 6, 24) + bytes(16), struct.pack(o + "II", 5, 14) + bytes(8),
                 struct.pack(o + "II", 5, 8) + bytes(8),
                 struct.pack(o + "II", 5, batch.MAX_RECORD + 4) + bytes(batch.MAX_RECORD - 4)]  # whole, too long
        blocks, at = [], 0
        while at < len(whole):  # the file's blocks, to put the odd ones between
            length = struct.unpack_from(o + "I", whole, at + 4)[0]
            blocks.append(whole[at:at + length])
            at += length
        for kind in kinds:
            mixed = list(blocks)
            for _ in range(3):
                mixed.insert(rng.randrange(2, len(mixed) + 1), kind)
            data = b"".join(mixed)
            offsets = [sum(map(len, mixed[:k])) for k in range(len(mixed))]
            # From the first packet block (the walk's usual start, after the section and interface headers),
            # from other blocks, and from a block inserted above (where the walk must stop or step over).
            starts = {offsets[2], *rng.sample(offsets[2:], 5), offsets[mixed.index(kind)]}
            bufs += [(data[:cut], big, at)
                     for at in starts for cut in (len(data), *rng.sample(range(at, len(data)), 5))]
        bufs.append((whole, big, 0))
    found = 0
    for data, big, at in bufs:
        header = struct.Struct((">" if big else "<") + "II").unpack_from
        starts, stop = batch.walk_pcapng(data, at, big, batch.MAX_RECORD)
        assert (starts.tolist(), stop) == batch._walk_pcapng(data, at, header), (big, at, len(data))
        found += len(starts)
    assert found > 1000  # the packet blocks were walked, not only stopped at


def _c_decode() -> Any:
    """dpicore.decode.batch, skipping unless it imported the header decode in C."""
    from dpicore.decode import batch

    if batch.decode_c is None:
        pytest.skip("dpicore/decode/cheaders.pyx is not built here (scripts/install.sh builds it when gcc and "
                    "python3-dev are there; DPI_PURE_PYTHON turns it off)")
    return batch


def _decoded_alike(files: list[Path]) -> int:
    """Every batch of ``files`` decoded in C and in numpy: the same frames decoded, and for those the same
    value of every field.  Returns how many frames were decoded."""
    batch = _c_decode()
    decoded = 0
    for path in files:
        for b in batch.batches(str(path)):
            c, n = batch.decode_headers(b), batch.decode_numpy(b)
            assert c.ok.tolist() == n.ok.tolist(), (path, b.first)
            for field in attrs.fields(batch.Headers):
                got, want = getattr(c, field.name), getattr(n, field.name)
                assert got.dtype == want.dtype and got.shape == want.shape, field.name
                assert got[n.ok].tolist() == want[n.ok].tolist(), (path, b.first, field.name)
            decoded += int(n.ok.sum())
    return decoded


def test_the_header_decode_in_c_reads_what_numpy_reads(tmp_path: Path) -> None:
    """On real captures (pcap and pcapng), on every link type, and on frames cut at every length or with
    bytes changed at random (each check of each header fails somewhere), and on random bytes."""
    rng = random.Random(13)
    captures = sorted((ROOT / "tests" / "captures" / "realclients").glob("*.pcap"))
    files = list(captures)
    pcapng = tmp_path / "real.pcapng"
    pcapng.write_bytes(pcapng_bytes([([(1, None)], [(0, ts, data) for ts, data, _ in _frames(captures[0])])]))
    files.append(pcapng)
    for linktype, frames in every_link_type().items():
        cut = [f[:k] for f in frames for k in range(len(f))]
        changed = []
        for f in frames:
            for _ in range(40):
                g = bytearray(f)
                for _ in range(rng.randrange(1, 4)):  # in the headers mostly: the first 70 bytes
                    g[rng.randrange(min(len(g), 70))] = rng.randrange(256)
                changed.append(bytes(g))
        noise = [rng.randbytes(rng.randrange(90)) for _ in range(300)]
        path = tmp_path / f"lt{linktype}.pcap"
        records = frames + cut + changed + noise
        path.write_bytes(pcap_bytes([(1_600_000_000 + i, f) for i, f in enumerate(records)], linktype))
        files.append(path)
    assert _decoded_alike(files) > 5_000


@pytest.mark.corpus
def test_the_header_decode_in_c_reads_the_corpus_as_numpy_does(corpus: Path) -> None:
    assert _decoded_alike(sorted((corpus / "pcap").iterdir())) > 20_000
