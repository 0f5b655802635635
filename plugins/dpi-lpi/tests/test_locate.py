"""Finding libprotoident: lookup order and the messages a user sees when it fails."""

from __future__ import annotations

import ctypes.util
import shutil
import subprocess

import pytest

from dpi_lpi import locate
from dpi_lpi.locate import ENV_VAR, LpiUnavailable


def test_lookup_order(monkeypatch, tmp_path) -> None:
    origin, paths = locate.candidates({})
    assert origin is None and paths[-1].startswith("/usr/local/lib")
    assert "libprotoident.so.2" in paths
    origin, paths = locate.candidates({"library": "~/lpi/libprotoident.so.2"})
    assert origin == "layers.lpi.library" and paths == [str(tmp_path.home() / "lpi/libprotoident.so.2")]
    monkeypatch.setenv(ENV_VAR, "/opt/lpi/libprotoident.so.2")
    assert locate.candidates({"library": "/elsewhere.so"}) == (
        f"the {ENV_VAR} environment variable", ["/opt/lpi/libprotoident.so.2"])


def test_explicit_path_that_does_not_load_names_itself(tmp_path) -> None:
    with pytest.raises(LpiUnavailable) as err:
        locate.load({"library": str(tmp_path / "libprotoident.so.2")})
    message = str(err.value)
    assert str(tmp_path / "libprotoident.so.2") in message and "layers.lpi.library" in message
    assert "docs/lpi.md" in message


def test_bad_library_setting() -> None:
    with pytest.raises(LpiUnavailable, match="must be a path"):
        locate.load({"library": 3})


def test_not_installed_message_says_how_to_get_it() -> None:
    if ctypes.util.find_library("protoident"):
        pytest.skip("a libprotoident is installed on this machine")
    with pytest.raises(LpiUnavailable) as err:
        locate.load({})
    message = str(err.value)
    for needle in ("not installed", "2.0.15", "libtrace-dev", "./bootstrap.sh", "ldconfig", ENV_VAR,
                   "docs/lpi.md"):
        assert needle in message


def test_missing_libtrace_is_named(build_fake, tmp_path) -> None:
    """A library linked against a libtrace that is absent: the message says to install libtrace3.

    The stub's soname is one no machine has, so the test also runs where libtrace3 is installed.
    """
    soname = "libtrace-absent-in-dpi-lpi-tests.so.3"
    stub_dir = tmp_path / "stub"
    stub_dir.mkdir()
    (stub_dir / "stub.c").write_text("int trace_stub(void) { return 0; }\n")
    gcc = shutil.which("gcc")
    subprocess.run([gcc, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(stub_dir / soname),
                    str(stub_dir / "stub.c")], check=True)
    linked = build_fake(extra=(f"-L{stub_dir}", "-Wl,--no-as-needed", f"-l:{soname}"), name="libneedstrace.so")
    shutil.rmtree(stub_dir)
    with pytest.raises(LpiUnavailable, match="apt-get install libtrace3"):
        locate.load({"library": str(linked)})
