"""The plugin's README stays true: every heuristic is in its table, its example heuristic works, and the
configuration keys it documents are the ones the plugin reads."""

from __future__ import annotations

import re
from pathlib import Path

from dpicore.model import TCP

from dpi_heuristics import plugin
from dpi_heuristics.protocols import all_heuristics
from dpi_heuristics.testing import classify

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def test_every_heuristic_has_a_row() -> None:
    rows = [line for line in _section("Protocols").splitlines() if line.startswith("| ")]
    first_cells = " ".join(re.split(r"\s*\|\s*", row)[1] for row in rows)
    missing = sorted({n for h in all_heuristics() for n in (h.name, *h.also)
                      if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", first_cells)})
    assert not missing, f"README protocol table lacks {missing}"


def test_honeypot_section_places_every_protocol() -> None:
    names = {n for h in all_heuristics() for n in (h.name, *h.also)}
    section = _section("Honeypots: one first payload")
    server_first = section.split("* **Server-first**", 1)[1].split("* Not from one payload", 1)[0]
    for name in ("FTP", "SMTP", "POP3", "IMAP", "MySQL", "VNC", "Telnet", "SSH"):  # issue 3's examples
        assert name in server_first
    covered = {n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", section)}
    assert covered == names, f"README honeypot section does not place {sorted(names - covered)}"


def test_the_example_heuristic_runs() -> None:
    code = re.search(r"## Writing a heuristic.*?```python\n(.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(compile(code.replace("from ..base import", "from dpi_heuristics.base import"), "README", "exec"),
         namespace)
    verdict = classify([(0, b"HEL"), (0, b"LO/1 there")], TCP, namespace["HEURISTICS"])
    assert verdict is not None and verdict.protocol == "Hello"


def test_documented_configuration_keys_are_read() -> None:
    block = re.search(r"\[layers\.heuristics\]\n(.*?)```", _section("Configuration"), re.S).group(1)
    keys = set(re.findall(r"^(\w+) =", block, re.M))
    source = Path(plugin.__file__).read_text()
    assert keys == {"enable", "block", "max_packets", "priority"}
    for key in keys - {"priority"}:  # priority is read by the core for every layer
        assert f'"{key}"' in source, key
