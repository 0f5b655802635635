"""Documentation stays true: every hook has its page with its exact signature,
every hook is exercised by some test, the runnable examples run, and the
links between the pages lead somewhere."""

from __future__ import annotations

import inspect
import re
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from dpicore import Classifier, hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("dpi_"))


def _signature(name: str) -> str:
    fn = getattr(hookspecs, name)
    text = f"def {name}{inspect.signature(fn)}"
    return text.replace('"', "").replace("'", "")


def test_there_are_hooks() -> None:
    assert {"dpi_layer_info", "dpi_configure", "dpi_unconfigure", "dpi_register_protocols", "dpi_flow_new",
            "dpi_classify", "dpi_flow_end"} <= set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_page_with_its_signature(name: str) -> None:
    page = DOCS / "hooks" / f"{name}.md"
    assert page.exists(), f"docs/hooks/{name}.md is missing"
    text = page.read_text()
    assert _signature(name) in text, f"docs/hooks/{name}.md does not show {_signature(name)}"
    assert f"[{name}]({name}.md)" in (DOCS / "hooks" / "README.md").read_text()


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_implemented_by_a_test_plugin(name: str) -> None:
    sources = [p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_docs.py"]
    sources.append((DOCS / "plugin-template" / "dpi_gopher" / "__init__.py").read_text())
    assert any(f"def {name}(" in s for s in sources), f"no test implements {name}"


def _template() -> SimpleNamespace:
    """The plugin template's package (not installed: the test runs its source)."""
    return SimpleNamespace(**runpy.run_path(str(DOCS / "plugin-template" / "dpi_gopher" / "__init__.py")))


def test_plugin_template_classifies_through_the_engine() -> None:
    gopher = _template()
    with Classifier(layers=["gopher"], extra_plugins=[("gopher", gopher.GopherLayer)]) as dpi:
        hit = dpi.classify_payload(b"/software/gopher\r\n", dst_port=70)
        assert (hit.protocol, hit.source, hit.metadata["selector"]) == ("Gopher", "gopher", "/software/gopher")
        for other in (b"GET / HTTP/1.0\r\n\r\n", b"USER anonymous\r\n", b"\x16\x03\x01\x00\x05hello"):
            assert dpi.classify_payload(other, dst_port=70).protocol == "Unknown"
        status = dpi.plugins.statuses["gopher"]
        assert status.status == "loaded" and status.priority == 15


def _run(example: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(DOCS / "examples" / example), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def test_example_honeypot() -> None:
    out = _run("honeypot.py").splitlines()
    assert "-> HTTP" in out[0] and "-> DNS" in out[2] and "-> Unknown" in out[4]


def test_example_packets() -> None:
    out = _run("packets.py")
    assert "verdict: HTTP" in out


@pytest.mark.parametrize("example", ["classify_pcap.py", "all_layers.py"])
def test_capture_examples(example: str, corpus: Path) -> None:
    out = _run(example, str(corpus / "pcap" / "dns-google-nsid.pcapng"))
    assert "DNS" in out


def test_plugin_template_configuration_errors_are_reported() -> None:
    from dpicore import Config

    gopher = _template()
    config = Config(layer_settings={"gopher": {"max_selector": "long"}})
    with Classifier(config=config, layers=None, extra_plugins=[("gopher", gopher.GopherLayer)]) as dpi:
        status = dpi.plugins.statuses["gopher"]
        assert status.status == "failed" and "max_selector" in status.reason
        assert "gopher" not in dpi.layers


#: A markdown link's target: ``[text](target)``, the target up to its closing parenthesis.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _documents() -> list[Path]:
    """The project's markdown pages: the README, docs/ (the plugin template's included), the plugins' READMEs."""
    return [ROOT / "README.md", *sorted(DOCS.glob("**/*.md")), *sorted(ROOT.glob("plugins/*/README.md"))]


def test_links_between_documents_resolve() -> None:
    """A page moved or renamed (docs/performance.md's log became performance-history.md) leaves no link
    behind that leads nowhere; links to the web and to anchors within a page are not followed."""
    pages = _documents()
    broken = []
    for page in pages:
        for target in _LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert len(pages) > 10 and not broken, broken
