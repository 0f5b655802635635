"""The constants of dpi_ndpi.abi42 against the libndpi-dev 4.2 headers and the library itself."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dpi_ndpi import abi42

HEADERS = Path("/usr/include/ndpi")

PROGRAM = r"""
#include <stdio.h>
#include <stddef.h>
#include <ndpi_config.h>
#include <ndpi_api.h>
int main(void) {
  printf("api_version=%d\n", NDPI_API_VERSION);
  printf("release=%s\n", NDPI_GIT_RELEASE);
  printf("flow_size=%zu\n", sizeof(struct ndpi_flow_struct));
  printf("confidence_offset=%zu\n", offsetof(struct ndpi_flow_struct, confidence));
  printf("confidence_size=%zu\n", sizeof(((struct ndpi_flow_struct *)0)->confidence));
  printf("protocol_size=%zu\n", sizeof(ndpi_protocol));
  printf("master_offset=%zu\n", offsetof(ndpi_protocol, master_protocol));
  printf("app_offset=%zu\n", offsetof(ndpi_protocol, app_protocol));
  printf("category_offset=%zu\n", offsetof(ndpi_protocol, category));
  printf("bitmask_size=%zu\n", sizeof(NDPI_PROTOCOL_BITMASK));
  printf("no_prefs=%d\n", (int)ndpi_no_prefs);
  return 0;
}
"""


@pytest.fixture(scope="module")
def header_facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What a C compiler says about the 4.2 structs (skips without gcc or libndpi-dev)."""
    gcc = shutil.which("gcc")
    if gcc is None or not (HEADERS / "ndpi_api.h").is_file():
        pytest.skip("needs gcc and libndpi-dev (apt-get install gcc libndpi-dev)")
    out = tmp_path_factory.mktemp("abi42")
    src, exe = out / "facts.c", out / "facts"
    src.write_text(PROGRAM)
    built = subprocess.run([gcc, f"-I{HEADERS}", str(src), "-o", str(exe)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    text = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in text.splitlines())


def test_headers_are_release_42(header_facts: dict[str, str]) -> None:
    assert int(header_facts["api_version"]) == abi42.API_VERSION
    assert header_facts["release"].startswith("4.2")


def test_flow_struct_layout(header_facts: dict[str, str]) -> None:
    assert int(header_facts["flow_size"]) == abi42.FLOW_STRUCT_SIZE
    assert int(header_facts["confidence_offset"]) == abi42.FLOW_CONFIDENCE_OFFSET
    assert int(header_facts["confidence_size"]) == ctypes.sizeof(ctypes.c_int)


def test_protocol_struct_layout(header_facts: dict[str, str]) -> None:
    assert int(header_facts["protocol_size"]) == ctypes.sizeof(abi42.Protocol) == 8
    for field in ("master", "app", "category"):
        name = field if field == "category" else f"{field}_protocol"
        assert int(header_facts[f"{field}_offset"]) == getattr(abi42.Protocol, name).offset


def test_bitmask_and_prefs(header_facts: dict[str, str]) -> None:
    assert int(header_facts["bitmask_size"]) == ctypes.sizeof(abi42.ProtocolBitmask) == 64
    assert int(header_facts["no_prefs"]) == abi42.INIT_PREFS


def test_library_matches_the_abi(abi: Any) -> None:
    assert abi.api_version == abi42.API_VERSION
    assert abi.flow_size == abi42.FLOW_STRUCT_SIZE
    assert abi.revision.startswith("4.2")
    # Confidence names come from the library; the offset read must land on a valid enum value.
    assert [abi.confidence_name(i) for i in range(5)] == ["Unknown", "Match by port", "Match by IP",
                                                           "DPI (cache)", "DPI"]
