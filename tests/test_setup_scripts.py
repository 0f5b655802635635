"""The README's two commands and CI's entry point behave as documented.

Each test runs the real script in a subprocess.  scripts/install.sh is fast
when .venv is already up to date (its stamp matches), which is the case
whenever this suite runs through scripts/test.sh.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bash(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(["bash", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines == ["exec bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (ROOT / "README.md").read_text()
    assert "bash scripts/setup.sh" in (ROOT / "README.md").read_text()


def test_setup_classifies_the_bundled_sample() -> None:
    res = _bash("scripts/setup.sh", "--quiet")
    assert res.returncode == 0, res.stderr
    table = res.stdout.split("dpi classify --format table samples/sample.pcap", 1)[1]
    for proto in ("HTTP", "DNS"):
        assert f" {proto} " in table
    assert table.count("127.0.0.1:") >= 2 * 20  # the sample holds 20+ flows, each with client and server


def test_test_script_fails_when_a_test_fails(tmp_path: Path) -> None:
    (tmp_path / "test_fails.py").write_text("def test_fails():\n    assert 1 == 2\n")
    res = _bash(str(ROOT / "scripts" / "test.sh"), "-q", "-p", "no:cacheprovider", str(tmp_path))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 failed" in res.stdout


def test_test_script_treats_no_tests_as_failure(tmp_path: Path) -> None:
    (tmp_path / "test_passes.py").write_text("def test_passes():\n    assert True\n")
    res = _bash(str(ROOT / "scripts" / "test.sh"), "-q", "-p", "no:cacheprovider", "-k", "no_such_test",
                str(tmp_path))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "collected no tests" in res.stderr


def test_test_script_passes_when_tests_pass(tmp_path: Path) -> None:
    (tmp_path / "test_passes.py").write_text("def test_passes():\n    assert True\n")
    res = _bash(str(ROOT / "scripts" / "test.sh"), "-q", "-p", "no:cacheprovider", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
