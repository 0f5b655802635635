"""How often the lpi layer names a flow as libprotoident itself does (needs the real library).

The layer fills ``lpi_data_t`` from dpicore packets instead of calling
libprotoident's ``lpi_update_data`` (which wants libtrace packets).  This
script measures what that costs: it builds ``tools/lpi_reference.cc``
against the installed libprotoident and libtrace, runs it over captures
(libprotoident's own answer per flow), runs dpicore with only the lpi layer
over the same captures, and compares the module names flow by flow.

    python plugins/dpi-lpi/benchmarks/agreement.py [CAPTURE ...]   # default: the nDPI corpus

Flows are matched by transport and endpoint pair; 5-tuples that dpicore
splits into several flows (reuse, timeouts) are left out, since the
reference keeps one flow per 5-tuple.  Captures libtrace 3 cannot read
(pcapng) are rewritten as classic pcap first, keeping wire lengths.
Requires: g++, libprotoident 2.0.15 (library and header), libtrace headers
(Debian: libtrace3-dev).  The acceptance bar for the layer is 99%.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable

import attrs

from dpicore import Classifier
from dpicore.config import config_from_dict
from dpicore.corpus import captures, corpus_dir
from dpicore.decode.capture import read_frames
from dpicore.model import format_ip

HERE = Path(__file__).resolve().parent
REFERENCE_SOURCE = HERE.parent / "tools" / "lpi_reference.cc"
TARGET = 0.99

Key = tuple[str, int, tuple[str, int], tuple[str, int]]


class ReferenceUnavailable(RuntimeError):
    """The reference program cannot be built here (no g++, libprotoident or libtrace headers)."""


@attrs.define
class Agreement:
    compared: int = 0
    same_name: int = 0
    same_protocol: int = 0
    only_reference: int = 0
    only_layer: int = 0
    differences: Counter = attrs.field(factory=Counter)

    @property
    def ratio(self) -> float:
        return self.same_name / self.compared if self.compared else 0.0


def build_reference(workdir: Path) -> Path:
    """Compile tools/lpi_reference.cc against the installed libprotoident (``LPI_PREFIX`` if not in /usr/local)."""
    compiler = shutil.which("g++")
    if compiler is None:
        raise ReferenceUnavailable("g++ is not installed")
    prefix = Path(os.environ.get("LPI_PREFIX", "/usr/local"))
    target = workdir / "lpi_reference"
    cmd = [compiler, "-O2", "-o", str(target), str(REFERENCE_SOURCE), f"-I{prefix / 'include'}",
           f"-L{prefix / 'lib'}", f"-Wl,-rpath,{prefix / 'lib'}", "-lprotoident", "-ltrace"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ReferenceUnavailable("cannot build the libprotoident reference program: "
                                   + (done.stderr.strip().splitlines() or ["g++ failed"])[-1])
    return target


def _classic_pcap(path: Path, out: Path) -> Path:
    """``path`` as a classic pcap (libtrace 3 reads no pcapng); frames and wire lengths unchanged."""
    with path.open("rb") as fh:
        if fh.read(4) in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
            return path
    frames = list(read_frames(path))
    linktype = frames[0].linktype if frames else 1
    target = out / (path.name + ".pcap")
    with target.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        for frame in frames:
            if frame.linktype != linktype:
                continue
            sec = int(frame.ts)
            usec = int(round((frame.ts - sec) * 1e6))
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            fh.write(struct.pack("<IIII", sec, usec, len(frame.data), frame.wire_len))
            fh.write(frame.data)
    return target


def _key(proto: int, a: tuple[str, int], b: tuple[str, int]) -> Key:
    x, y = sorted([a, b])
    return (str(proto), 0, x, y)


def reference_answers(binary: Path, files: dict[Path, Path]) -> dict[tuple[str, Key], str]:
    """libprotoident's module name per (capture name, flow key)."""
    done = subprocess.run([str(binary), *map(str, files.values())], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"lpi_reference failed ({done.returncode}): {done.stderr.strip()}")
    names = {str(v): k.name for k, v in files.items()}
    answers: dict[tuple[str, Key], str] = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        key = _key(row["proto"], (row["client"], row["client_port"]), (row["server"], row["server_port"]))
        answers[(names[row["file"]], key)] = row["lpi"]
    return answers


def layer_answers(paths: Iterable[Path], library: str | None = None
                  ) -> dict[tuple[str, Key], tuple[str, str] | None]:
    """The lpi layer's (module name, canonical protocol) per flow; None for a 5-tuple dpicore split."""
    settings = {"library": library} if library else {}
    answers: dict[tuple[str, Key], tuple[str, str] | None] = {}
    with Classifier(config=config_from_dict({"layers": {"lpi": settings}}), layers=["lpi"]) as clf:
        for path in paths:
            for flow in clf.classify_pcap(path):
                if flow.proto not in (6, 17):
                    continue
                key = (path.name, _key(flow.proto, (format_ip(flow.client), flow.client_port),
                                       (format_ip(flow.server), flow.server_port)))
                verdict = next((v for v in flow.verdicts if v.source == "lpi"), None)
                value = (verdict.metadata.get("lpi_protocol", ""), verdict.protocol) if verdict else ("", "")
                answers[key] = None if key in answers else value
    return answers


def compare(reference: dict[tuple[str, Key], str], layer: dict[tuple[str, Key], tuple[str, str] | None]
            ) -> Agreement:
    from dpicore import canonical

    result = Agreement()
    for key, ours in layer.items():
        theirs = reference.get(key)
        if ours is None:
            continue
        if theirs is None:
            result.only_layer += 1
            continue
        result.compared += 1
        if ours[0] == theirs:
            result.same_name += 1
        else:
            result.differences[(theirs, ours[0])] += 1
        result.same_protocol += canonical(theirs) == ours[1]
    result.only_reference = sum(1 for key in reference if key not in layer)
    return result


def measure(paths: list[Path], library: str | None = None) -> Agreement:
    with tempfile.TemporaryDirectory(prefix="lpi-agreement-") as tmp:
        work = Path(tmp)
        binary = build_reference(work)
        files = {p: _classic_pcap(p, work) for p in paths}
        reference = reference_answers(binary, files)
    return compare(reference, layer_answers(paths, library))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("captures", nargs="*", type=Path)
    parser.add_argument("--library", help="libprotoident.so for the layer (default: the usual lookup)")
    args = parser.parse_args(argv)
    paths = args.captures
    if not paths:
        corpus = corpus_dir()
        if corpus is None:
            parser.error("no captures given and the nDPI corpus is absent")
        paths = [path for path, _ in captures(corpus)]
    try:
        result = measure(paths, args.library)
    except ReferenceUnavailable as exc:
        print(f"cannot measure: {exc}", file=sys.stderr)
        return 2
    print(f"captures: {len(paths)}")
    print(f"flows compared: {result.compared} (only in reference: {result.only_reference}, "
          f"only in dpicore: {result.only_layer})")
    print(f"same libprotoident module: {result.same_name} ({result.ratio:.2%}); "
          f"same canonical protocol: {result.same_protocol}")
    for (theirs, ours), count in result.differences.most_common(15):
        print(f"  {count:5d}  libprotoident {theirs!r}  layer {ours!r}")
    print(f"target {TARGET:.0%}: {'met' if result.ratio >= TARGET else 'NOT met'}")
    return 0 if result.ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
