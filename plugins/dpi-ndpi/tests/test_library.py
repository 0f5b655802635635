"""Finding libndpi, refusing releases the layer has no ABI for, and failing cleanly without it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dpicore import Classifier, Config, discover
from dpicore.plugins import FAILED, LOADED
from dpi_ndpi import library
from dpi_ndpi.library import ENV_VAR, NdpiUnavailable, NdpiUnsupported

MISSING = "/nonexistent/libndpi.so.4.2"
HINT = "apt-get install libndpi4.2"


def _dpi(*args: str, env_library: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    if env_library is not None:
        env[ENV_VAR] = env_library
    return subprocess.run([sys.executable, "-m", "dpicore.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_default_lookup_tries_the_42_soname_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    origin, paths = library.candidates({})
    assert origin is None
    assert paths[0] == "libndpi.so.4.2"


def test_environment_variable_wins_over_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "/from/env.so")
    assert library.candidates({"library": "/from/config.so"}) == (f"the {ENV_VAR} environment variable",
                                                                  ["/from/env.so"])


def test_missing_library_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, MISSING)
    with pytest.raises(NdpiUnavailable) as err:
        library.load({})
    assert HINT in str(err.value) and ENV_VAR in str(err.value)


def test_missing_library_from_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(NdpiUnavailable, match="layers.ndpi.library"):
        library.load({"library": MISSING})
    with pytest.raises(NdpiUnavailable, match="must be a path"):
        library.load({"library": 42})


def test_a_library_that_is_not_ndpi_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "libc.so.6")
    with pytest.raises(NdpiUnsupported, match="ndpi_get_api_version"):
        library.load({})


def test_an_unknown_api_version_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library reporting another nDPI API version is refused before any struct is touched."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build a library with another API version")
    src, lib = tmp_path / "future.c", tmp_path / "libndpi-future.so"
    src.write_text("unsigned short ndpi_get_api_version(void) { return 9999; }\n")
    subprocess.run([gcc, "-shared", "-fPIC", str(src), "-o", str(lib)], check=True, capture_output=True)
    monkeypatch.setenv(ENV_VAR, str(lib))
    with pytest.raises(NdpiUnsupported) as err:
        library.load({})
    message = str(err.value)
    assert "9999" in message and "8668 (nDPI 4.2)" in message and "refuses to guess" in message


def test_plugin_reports_failure_and_other_layers_keep_working(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, MISSING)
    plugins = discover(Config())
    try:
        status = plugins.statuses["ndpi"]
        assert status.status == FAILED and HINT in status.reason
        assert "ndpi" not in [layer.id for layer in plugins.layers]
        others = [s for s in plugins.statuses.values() if s.id != "ndpi"]
        assert any(s.status == LOADED for s in others), "no other layer loaded"
    finally:
        plugins.close()


def test_configuration_key_points_the_loader_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    plugins = discover(Config(layer_settings={"ndpi": {"library": MISSING}}))
    try:
        assert plugins.statuses["ndpi"].status == FAILED
        assert "layers.ndpi.library" in plugins.statuses["ndpi"].reason
    finally:
        plugins.close()


def test_dpi_plugins_shows_the_failed_layer_with_the_hint() -> None:
    run = _dpi("plugins", "--json", env_library=MISSING)
    assert run.returncode == 0, run.stderr
    rows = {row["id"]: row for row in json.loads(run.stdout)}
    assert rows["ndpi"]["status"] == "failed"
    assert HINT in rows["ndpi"]["reason"]
    assert rows["heuristics"]["status"] == "loaded"


def test_dpi_classify_without_libndpi(tmp_path: Path) -> None:
    """Other layers still classify; asking for the nDPI layer explicitly is a clear usage error."""
    capture = tmp_path / "dns.pcap"
    _write_dns_capture(capture)
    ok = _dpi("classify", "-q", "-f", "jsonl", str(capture), env_library=MISSING)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[0])["protocol"] == "DNS"
    assert "ndpi" in ok.stderr and HINT in ok.stderr
    required = _dpi("classify", "-q", "--layers", "ndpi", str(capture), env_library=MISSING)
    assert required.returncode == 2
    assert HINT in required.stderr


def test_with_the_real_library_the_layer_loads(abi: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with Classifier(layers=["ndpi"]) as clf:
        assert clf.layers == ["ndpi"]
        assert "nDPI 4.2" in clf.plugins.statuses["ndpi"].description


def _write_dns_capture(path: Path) -> None:
    import dpkt

    query = dpkt.dns.DNS(id=0x1234, qd=[dpkt.dns.DNS.Q(name="example.com", type=dpkt.dns.DNS_A)])
    udp = dpkt.udp.UDP(sport=40000, dport=53, data=bytes(query))
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), p=17, data=udp)
    ip.len = len(ip)
    frame = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip)
    with path.open("wb") as fh:
        dpkt.pcap.Writer(fh).writepkt(bytes(frame), ts=1_600_000_000.0)
