"""The ctypes binding against the C test double: struct layout, size probe, names, lazy loading."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil

import pytest

from dpi_lpi import binding, runtime
from dpi_lpi.binding import LPI_DATA_OFFSETS, LayoutError, Library, LpiData, LpiError, open_library


def load(path) -> Library:
    return Library(str(path), open_library(str(path)))


def test_declared_layout_is_the_x86_64_one() -> None:
    binding.check_layout()
    assert ctypes.sizeof(LpiData) == 52
    assert {f: getattr(LpiData, f).offset for f in LPI_DATA_OFFSETS} == LPI_DATA_OFFSETS
    assert binding.LpiModule.name.offset == 8 and binding.LpiModule.priority.offset == 16


def test_every_field_reaches_c_at_its_place(fake_lpi, parse_dump) -> None:
    """Distinct values in every field come back from the C side unchanged: order, sizes, byte order."""
    lib = load(fake_lpi)
    lib.initialise()
    try:
        data = LpiData()
        data.payload[0] = int.from_bytes(b"GET ", "little")
        data.payload[1] = int.from_bytes(b"HTTP", "little")
        data.seen_syn[0], data.seen_syn[1] = True, False
        data.seqno[0], data.seqno[1] = 0x01020304, 0xFFFFFFFF
        data.observed[0], data.observed[1] = 32769, 7
        data.server_port, data.client_port = 8080, 65535
        data.trans_proto = 17
        data.payload_len[0], data.payload_len[1] = 1460, 3
        data.ips[0] = int.from_bytes(bytes([192, 0, 2, 1]), "little")
        data.ips[1] = int.from_bytes(bytes([198, 51, 100, 7]), "little")
        seen = parse_dump(lib.guess(data).name)
    finally:
        lib.free()
    assert seen == {
        "p0": b"GET ".hex(), "p1": b"HTTP".hex(), "syn": "1,0", "seq": f"{0x01020304},{0xFFFFFFFF}",
        "obs": "32769,7", "sp": "8080", "cp": "65535", "tp": "17", "len": "1460,3",
        "ip0": "c0000201", "ip1": "c6336407",
    }


def test_guess_copies_the_name_and_category_at_once(build_fake) -> None:
    lib = load(build_fake('FAKE_NAME="SSL/TLS"', "FAKE_PRIORITY=9"))
    lib.initialise()
    first = lib.guess(LpiData())
    lib.free()  # the double scribbles over its name buffer here
    assert first.name == "SSL/TLS"
    assert (first.protocol, first.category, first.priority) == (42, 7, 9)
    assert first.category_name == "category-7"


def test_guess_is_refused_after_free(fake_lpi) -> None:
    lib = load(fake_lpi)
    lib.initialise()
    lib.free()
    with pytest.raises(LpiError, match="NULL"):
        lib.guess(LpiData())


def test_size_probe_accepts_2_0_15_and_refuses_the_extended_struct(fake_lpi, build_fake) -> None:
    assert load(fake_lpi).probe_data_size() == 52
    load(fake_lpi).check_data_size()
    extended = load(build_fake("FAKE_EXTENDED"))
    assert extended.probe_data_size() == 64
    with pytest.raises(LayoutError, match="initialises 64 bytes.*52-byte"):
        extended.check_data_size()
    with pytest.raises(LayoutError):
        runtime.acquire({"library": str(build_fake("FAKE_EXTENDED"))})


def test_lazy_binding_loads_a_library_with_unresolved_libtrace_symbols(fake_lpi, tmp_path) -> None:
    """The double's lpi_update_data calls an undefined libtrace function, as the real one does."""
    # Fresh copies: dlopen of an already loaded file would return the loaded one whatever the mode.
    eager, lazy = tmp_path / "eager.so", tmp_path / "lazy.so"
    shutil.copy(fake_lpi, eager)
    shutil.copy(fake_lpi, lazy)
    with pytest.raises(OSError, match="undefined symbol: trace_get_payload_length"):
        ctypes.CDLL(str(eager), mode=os.RTLD_NOW)
    lib = Library(str(lazy), open_library(str(lazy)))
    assert lib.probe_data_size() == 52


def test_a_library_without_the_api_is_rejected() -> None:
    libm = ctypes.util.find_library("m")
    assert libm
    with pytest.raises(LpiError, match="not libprotoident.*lpi_init_library"):
        Library(libm, open_library(libm))


def test_failed_initialisation_is_reported(build_fake) -> None:
    lib = load(build_fake("FAKE_INIT_FAIL"))
    with pytest.raises(LpiError, match=r"lpi_init_library\(\) returned -1"):
        lib.initialise()
