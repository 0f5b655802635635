"""Hand-written ctypes declarations for libprotoident 2.0.15.

libprotoident's header includes ``<list>`` and ``libtrace.h``, so it is C++
only and there is nothing for cffi's API mode or a header parser to read.
The five functions and two structures the layer needs are declared here by
hand, and because a hand-written declaration can silently disagree with the
library, the layout of ``lpi_data_t`` is checked twice:

* when this module is imported, against the offsets of the 2.0.15 build on
  x86-64 (a 32-bit or exotic ABI would place the fields elsewhere);
* when a library is loaded, by :meth:`Library.probe_data_size`: its own
  ``lpi_init_data`` is run over a buffer of sentinel bytes and must write
  exactly the 52 bytes of the 2.0.15 structure.  A build of the unreleased
  branch that appends 12 bytes (and zeroes them) is refused instead of being
  handed a struct too short for it.

``lpi_update_data`` is deliberately not declared: it takes a libtrace
packet.  The layer fills ``lpi_data_t`` itself (:mod:`dpi_lpi.flowdata`).
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, c_bool, c_char_p, c_int, c_uint8, c_uint16, c_uint32

import attrs


class LpiError(RuntimeError):
    """libprotoident is missing, unusable or misbehaving; the message says what to do."""


class LayoutError(LpiError):
    """Our declaration of ``lpi_data_t`` does not match this platform or this library."""


class LpiData(ctypes.Structure):
    """``lpi_data_t`` of libprotoident 2.0.15 (52 bytes on x86-64).

    ``payload`` and ``ips`` hold raw network-order bytes reinterpreted as a
    native ``uint32`` (the library copies them with a plain 32-bit load);
    ports, sequence numbers and lengths are host-order numbers.
    """

    _fields_ = [
        ("payload", c_uint32 * 2),
        ("seen_syn", c_bool * 2),
        ("seqno", c_uint32 * 2),
        ("observed", c_uint32 * 2),
        ("server_port", c_uint16),
        ("client_port", c_uint16),
        ("trans_proto", c_uint8),
        ("payload_len", c_uint32 * 2),
        ("ips", c_uint32 * 2),
    ]


class LpiModule(ctypes.Structure):
    """The leading fields of ``lpi_module_t`` (the callback pointer after them is never touched)."""

    _fields_ = [
        ("protocol", c_int),
        ("category", c_int),
        ("name", c_char_p),
        ("priority", c_uint8),
    ]


#: Size and field offsets of ``lpi_data_t`` in libprotoident 2.0.15 on x86-64.
LPI_DATA_SIZE = 52
LPI_DATA_OFFSETS: dict[str, int] = {
    "payload": 0, "seen_syn": 8, "seqno": 12, "observed": 20, "server_port": 28,
    "client_port": 30, "trans_proto": 32, "payload_len": 36, "ips": 44,
}
LPI_MODULE_OFFSETS: dict[str, int] = {"protocol": 0, "category": 4, "name": 8, "priority": 16}

#: Bytes of sentinel-filled buffer the size probe hands to ``lpi_init_data``;
#: far larger than any known variant, so a bigger struct cannot write past it.
PROBE_BYTES = 1024
_SENTINEL = 0xA5

#: The C functions the layer calls: name -> (restype, argtypes).
FUNCTIONS: dict[str, tuple[object, list[object]]] = {
    "lpi_init_library": (c_int, []),
    "lpi_free_library": (None, []),
    "lpi_init_data": (None, [POINTER(LpiData)]),
    "lpi_guess_protocol": (POINTER(LpiModule), [POINTER(LpiData)]),
    "lpi_print_category": (c_char_p, [c_int]),
}


def check_layout() -> None:
    """Raise :class:`LayoutError` unless ctypes lays the structures out as the 2.0.15 build does."""
    problems = []
    if ctypes.sizeof(LpiData) != LPI_DATA_SIZE:
        problems.append(f"sizeof(lpi_data_t) is {ctypes.sizeof(LpiData)}, expected {LPI_DATA_SIZE}")
    for struct, offsets in ((LpiData, LPI_DATA_OFFSETS), (LpiModule, LPI_MODULE_OFFSETS)):
        for field, want in offsets.items():
            got = getattr(struct, field).offset
            if got != want:
                problems.append(f"{struct.__name__}.{field} at offset {got}, expected {want}")
    if problems:
        raise LayoutError("this platform does not lay out libprotoident's structures like x86-64 Linux: "
                          + "; ".join(problems))


check_layout()


@attrs.define(slots=True, frozen=True)
class Guess:
    """libprotoident's answer for one flow, copied out of the library's memory."""

    name: str
    protocol: int
    category: int
    category_name: str
    priority: int


def open_library(path: str) -> ctypes.CDLL:
    """dlopen ``path`` with lazy binding.

    A standard libprotoident build links libtrace; lazy binding means a
    libtrace whose symbols differ from the build's (or one that lacks
    functions only ``lpi_update_data`` uses) does not stop the load, since
    the layer never calls into libtrace.  The libtrace shared object itself
    must still be present (Debian: ``libtrace3``).
    """
    return ctypes.CDLL(path, mode=os.RTLD_LAZY)


class Library:
    """One loaded libprotoident: declared functions, size probe, init/guess/free."""

    def __init__(self, path: str, cdll: ctypes.CDLL) -> None:
        self.path = path
        self._cdll = cdll
        missing = []
        for name, (restype, argtypes) in FUNCTIONS.items():
            try:
                fn = getattr(cdll, name)
            except AttributeError:
                missing.append(name)
                continue
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, "_" + name, fn)
        if missing:
            raise LpiError(f"{path} is not libprotoident 2.x: it exports no {', '.join(missing)}")
        self._categories: dict[int, str] = {}
        self.initialised = False

    def probe_data_size(self) -> int:
        """How many bytes the library's ``lpi_init_data`` writes: the size of its ``lpi_data_t``.

        Every field of the 2.0.15 struct is zeroed by ``lpi_init_data``, the
        last one (``ips[1]``) ending at byte 52; a variant with fields
        appended that it also initialises writes further.  Padding bytes may
        or may not be written; only the extent counts.
        """
        buf = (c_uint8 * PROBE_BYTES)(*([_SENTINEL] * PROBE_BYTES))
        self._lpi_init_data(ctypes.cast(buf, POINTER(LpiData)))
        written = [i for i in range(PROBE_BYTES) if buf[i] != _SENTINEL]
        return written[-1] + 1 if written else 0

    def check_data_size(self) -> None:
        size = self.probe_data_size()
        if size != LPI_DATA_SIZE:
            raise LayoutError(
                f"{self.path}: its lpi_init_data initialises {size} bytes, but dpi-lpi declares the "
                f"{LPI_DATA_SIZE}-byte lpi_data_t of libprotoident 2.0.15; refusing to pass it a struct of "
                "the wrong size (install the 2.0.15 release, see docs/lpi.md)")

    def initialise(self) -> None:
        if self.initialised:
            return
        rc = self._lpi_init_library()
        if rc != 0:
            raise LpiError(f"{self.path}: lpi_init_library() returned {rc} (no protocol modules loaded?)")
        self.initialised = True

    def free(self) -> None:
        if self.initialised:
            self._lpi_free_library()
            self.initialised = False

    def init_data(self, data: LpiData) -> None:
        self._lpi_init_data(ctypes.byref(data))

    def guess(self, data: LpiData) -> Guess:
        """Run ``lpi_guess_protocol``; the module's name is copied before anything else happens."""
        ptr = self._lpi_guess_protocol(ctypes.byref(data))
        if not ptr:
            raise LpiError("lpi_guess_protocol returned NULL: the library is not initialised")
        module = ptr.contents
        raw = module.name  # c_char_p field: ctypes copies the C string into a new bytes object here
        name = raw.decode("utf-8", "replace") if raw else ""
        category = module.category
        return Guess(name, module.protocol, category, self.category_name(category), module.priority)

    def category_name(self, category: int) -> str:
        """``lpi_print_category``, cached (the strings are constants, the set is small)."""
        cached = self._categories.get(category)
        if cached is None:
            raw = self._lpi_print_category(category)
            cached = raw.decode("utf-8", "replace") if raw else ""
            self._categories[category] = cached
        return cached
