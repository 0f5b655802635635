"""Plugin discovery for real: wheels, a fresh venv, the CLI outside the checkout.

Builds a wheel of dpicore (this checkout) and of a small plugin distribution
the test writes (its own pyproject.toml, hatchling, a ``dpicore.plugins``
entry point, plus a second entry point that is broken on purpose), installs
both into a new virtual environment, and runs that environment's ``dpi``
from a temporary directory.  Nothing from the checkout or this test run's
environment is on that interpreter's path, so the plugin can only be found
through its installed entry point.

Dependencies (pluggy, attrs, dpkt, click, rich, pcapy-ng) come from the
package index or pip's cache/find-links; the test takes 10-40 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from tests.helpers.frames import ACK, PSH, eth, pcap_bytes, tcp4, udp4

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_VERSION = "0.3.1"

PYPROJECT = f"""
[build-system]
requires = ["hatchling>=1.18"]
build-backend = "hatchling.build"

[project]
name = "dpi-probe"
version = "{PLUGIN_VERSION}"
description = "dpicore discovery-test plugin"
requires-python = ">=3.11"
dependencies = ["dpicore"]

[project.entry-points."dpicore.plugins"]
probe = "dpi_probe"
broken = "dpi_probe.not_there"

[tool.hatch.build.targets.wheel]
packages = ["dpi_probe"]
"""

MODULE = '''
"""Names flows whose client starts with the line PROBE/1."""
from dpicore import LayerInfo, ProtocolSpec, Verdict, hookimpl


@hookimpl
def dpi_layer_info():
    return LayerInfo(id="probe", priority=12, protocols=("ProbeProto",), max_packets=2,
                     description="discovery-test layer")


@hookimpl
def dpi_register_protocols():
    return [ProtocolSpec("ProbeProto", aliases=("PROBE_v1",))]


@hookimpl
def dpi_classify(packet, direction):
    if direction == 0 and packet.payload.startswith(b"PROBE/1 "):
        name = packet.payload[8:].split(b"\\r\\n", 1)[0].decode("ascii", "replace")
        return Verdict("PROBE_v1", confidence=0.9, metadata={"greeting": name})
    return None
'''


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def build_wheel(source: Path, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest), str(source)]
    if importlib.util.find_spec("hatchling") is not None:
        cmd.insert(4, "--no-build-isolation")  # the backend is already here: no download, faster
    proc = run(cmd, cwd=dest)
    assert proc.returncode == 0, proc.stderr
    name = "dpicore" if source == ROOT else "dpi_probe"
    (wheel,) = dest.glob(f"{name}-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(the fresh venv's bin directory, a clean environment to run it in)."""
    tmp = tmp_path_factory.mktemp("discovery")
    plugin = tmp / "dpi-probe"
    (plugin / "dpi_probe").mkdir(parents=True)
    (plugin / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (plugin / "dpi_probe" / "__init__.py").write_text(MODULE)
    wheels = tmp / "wheels"
    wheels.mkdir()
    core = build_wheel(ROOT, wheels)
    probe = build_wheel(plugin, wheels)
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    proc = run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--find-links",
                str(wheels), str(core), str(probe)], cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    return env_dir / "bin", env


def test_installed_core_is_the_wheel_not_the_checkout(installed, tmp_path: Path) -> None:
    bindir, env = installed
    proc = run([str(bindir / "python"), "-c", "import dpicore, dpi_probe; print(dpicore.__file__)"],
               cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    location = Path(proc.stdout.strip())
    assert location.is_relative_to(bindir.parent) and not location.is_relative_to(ROOT)


def test_dpi_plugins_lists_the_installed_plugin(installed, tmp_path: Path) -> None:
    bindir, env = installed
    proc = run([str(bindir / "dpi"), "plugins", "--json"], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["id"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"probe", "broken"}, "only what this venv has installed"
    probe = rows["probe"]
    assert (probe["status"], probe["distribution"], probe["version"], probe["priority"]) == \
        ("loaded", "dpi-probe", PLUGIN_VERSION, 12)
    assert probe["description"] == "discovery-test layer"
    broken = rows["broken"]
    assert broken["status"] == "failed" and "dpi_probe.not_there" in broken["reason"]
    assert broken["distribution"] == "dpi-probe"


def test_dpi_classify_uses_the_installed_plugin(installed, tmp_path: Path) -> None:
    bindir, env = installed
    frames = [eth(tcp4("10.1.0.1", 41000, "10.1.0.2", 7777, PSH | ACK, b"PROBE/1 hello-from-wheel\r\n")),
              eth(tcp4("10.1.0.2", 7777, "10.1.0.1", 41000, PSH | ACK, b"OK\r\n")),
              eth(udp4("10.1.0.1", 5000, "10.1.0.3", 6000, b"something else"))]
    (tmp_path / "probe.pcap").write_bytes(pcap_bytes([(1_700_000_000 + i, f) for i, f in enumerate(frames)]))
    proc = run([str(bindir / "dpi"), "classify", "probe.pcap", "--format", "jsonl"], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "plugin broken unavailable" in proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 2
    tcp_rec = next(r for r in records if r["transport"] == "TCP")
    assert (tcp_rec["protocol"], tcp_rec["source"], tcp_rec["confidence"]) == ("ProbeProto", "probe", 0.9)
    assert tcp_rec["metadata"] == {"greeting": "hello-from-wheel"}
    assert (tcp_rec["src_port"], tcp_rec["dst_port"], tcp_rec["packets"]) == (41000, 7777, 2)
    udp_rec = next(r for r in records if r["transport"] == "UDP")
    assert udp_rec["protocol"] == "Unknown"


def test_config_blocks_the_installed_plugin(installed, tmp_path: Path) -> None:
    bindir, env = installed
    (tmp_path / "cfg.toml").write_text('[layers]\nblock = ["probe"]\n')
    rows = {r["id"]: r for r in json.loads(run([str(bindir / "dpi"), "plugins", "--json", "-c", "cfg.toml"],
                                               cwd=tmp_path, env=env).stdout)}
    assert rows["probe"]["status"] == "disabled"
    (tmp_path / "req.toml").write_text('[layers]\nrequire = ["probe"]\nblock = ["probe"]\n')
    (tmp_path / "x.pcap").write_bytes(pcap_bytes([(1.0, eth(udp4()))]))
    proc = run([str(bindir / "dpi"), "classify", "x.pcap", "-c", "req.toml"], cwd=tmp_path, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "probe: disabled" in proc.stderr
