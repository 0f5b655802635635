"""Everything specific to nDPI 4.2 (``ndpi_get_api_version() == 8668``), in one place.

Every later release (4.4, 4.6/4.8, 4.10, 5.0) changes something this module
relies on: the size of ``ndpi_protocol``, the arguments of the process call,
the init API, the values of the confidence enum.  So nothing here is guessed
at run time: the loader (:mod:`dpi_ndpi.library`) reads the library's API
version first and only binds this module when it is exactly :data:`API_VERSION`.

Facts below come from the Debian ``libndpi-dev`` 4.2 headers in
``/usr/include/ndpi`` (``ndpi_api.h``, ``ndpi_typedefs.h``, ``ndpi_define.h``);
``tests/test_abi42.py`` recompiles a tiny C program against those headers and
checks every size and offset here, so a mismatch fails loudly in CI instead of
corrupting memory.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, c_char_p, c_int, c_uint, c_uint8, c_uint16, c_uint32, c_uint64, c_void_p

#: ``NDPI_API_VERSION`` of the 4.2 release.
API_VERSION = 8668
#: Human name of the release this module describes.
RELEASE = "nDPI 4.2"
#: The shared object Debian's ``libndpi4.2`` installs (there is no ``libndpi.so.4``).
SONAME = "libndpi.so.4.2"
#: ``ndpi_detection_get_sizeof_ndpi_flow_struct()`` on 4.2; checked against the library at load.
FLOW_STRUCT_SIZE = 688
#: ``offsetof(struct ndpi_flow_struct, confidence)``: u16[2] stack, four u16 guesses, a u8 and a
#: bitfield byte, then the 4-byte enum.  4.2 exports no accessor for it.
FLOW_CONFIDENCE_OFFSET = 16
#: ``NDPI_NUM_BITS`` = 512: the protocol bitmask is 16 ``u_int32_t`` words.
PROTOCOL_BITMASK_WORDS = 16
#: ``ndpi_no_prefs``: what ndpiReader passes unless run with ``-z`` (JA3+).
INIT_PREFS = 0


class Protocol(ctypes.Structure):
    """``ndpi_protocol`` of 4.2: 8 bytes, returned by value (in a register on x86-64 and arm64)."""

    _fields_ = [("master_protocol", c_uint16), ("app_protocol", c_uint16), ("category", c_int)]


class ProtocolBitmask(ctypes.Structure):
    """``NDPI_PROTOCOL_BITMASK`` (``ndpi_protocol_bitmask_struct_t``)."""

    _fields_ = [("fds_bits", c_uint32 * PROTOCOL_BITMASK_WORDS)]


#: (function, restype, argtypes) of every libndpi 4.2 entry point the layer calls.
_SIGNATURES: tuple[tuple[str, object, list[object]], ...] = (
    ("ndpi_get_api_version", c_uint16, []),
    ("ndpi_revision", c_char_p, []),
    ("ndpi_init_detection_module", c_void_p, [c_uint32]),
    ("ndpi_set_protocol_detection_bitmask2", None, [c_void_p, POINTER(ProtocolBitmask)]),
    ("ndpi_finalize_initialization", None, [c_void_p]),
    ("ndpi_exit_detection_module", None, [c_void_p]),
    ("ndpi_detection_get_sizeof_ndpi_flow_struct", c_uint32, []),
    # (module, flow, IP-layer bytes, their length, time in ms): five arguments in 4.2.
    ("ndpi_detection_process_packet", Protocol, [c_void_p, c_void_p, c_char_p, ctypes.c_ushort, c_uint64]),
    ("ndpi_detection_giveup", Protocol, [c_void_p, c_void_p, c_uint8, POINTER(c_uint8)]),
    ("ndpi_extra_dissection_possible", c_uint8, [c_void_p, c_void_p]),
    # ndpi_calloc zeroes what ndpi_malloc allocates, and ndpi_free frees it: nDPI's allocator both ways.
    # ndpi_free_flow_data frees nDPI's data inside a flow (ndpi_free_flow is it, then ndpi_free of the
    # flow: the layer's flows live in blocks, see dpi_ndpi.arena).
    ("ndpi_calloc", c_void_p, [ctypes.c_ulong, ctypes.c_size_t]),
    ("ndpi_free", None, [c_void_p]),
    ("ndpi_free_flow_data", None, [c_void_p]),
    ("ndpi_protocol2name", c_char_p, [c_void_p, Protocol, c_char_p, c_uint]),
    ("ndpi_get_proto_name", c_char_p, [c_void_p, c_uint16]),
    ("ndpi_get_num_supported_protocols", c_uint, [c_void_p]),
    ("ndpi_category_get_name", c_char_p, [c_void_p, c_int]),
    ("ndpi_confidence_get_name", c_char_p, [c_int]),
    ("ndpi_get_flow_name", c_char_p, [c_void_p]),
)

#: Room for ``ndpi_protocol2name``: two protocol names and a dot.
_LABEL_BUFFER = 128


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


class Ndpi42:
    """libndpi 4.2 behind a small, version-neutral interface.

    The rest of the package only talks to this class (module lifetime,
    process/give-up/free on a flow buffer, names), so supporting another
    release means writing a sibling module with the same methods.
    """

    api_version = API_VERSION
    release = RELEASE

    def __init__(self, lib: ctypes.CDLL) -> None:
        for name, restype, argtypes in _SIGNATURES:
            fn = getattr(lib, name)  # AttributeError: a symbol 4.2 exports is missing
            fn.restype = restype
            fn.argtypes = argtypes
        self.lib = lib
        self.revision = _text(lib.ndpi_revision())
        self.flow_size = int(lib.ndpi_detection_get_sizeof_ndpi_flow_struct())
        if self.flow_size != FLOW_STRUCT_SIZE:
            raise RuntimeError(f"libndpi reports a {self.flow_size}-byte flow struct; {RELEASE} has "
                               f"{FLOW_STRUCT_SIZE}: this is not the library the layer was written for")
        # Hot-path entry points, looked up once.
        self.process = lib.ndpi_detection_process_packet
        self.extra_possible = lib.ndpi_extra_dissection_possible
        self._calloc = lib.ndpi_calloc
        self.free = lib.ndpi_free
        self._free_flow_data = lib.ndpi_free_flow_data
        self._giveup = lib.ndpi_detection_giveup

    # -- module lifetime ---------------------------------------------------------
    def open_module(self) -> int:
        """A finalized detection module with every protocol enabled (what ndpiReader sets up)."""
        lib = self.lib
        module = lib.ndpi_init_detection_module(INIT_PREFS)
        if not module:
            raise MemoryError("ndpi_init_detection_module failed")
        everything = ProtocolBitmask()
        for i in range(PROTOCOL_BITMASK_WORDS):
            everything.fds_bits[i] = 0xFFFFFFFF
        lib.ndpi_set_protocol_detection_bitmask2(module, ctypes.byref(everything))
        lib.ndpi_finalize_initialization(module)
        return int(module)

    def close_module(self, module: int) -> None:
        self.lib.ndpi_exit_detection_module(module)

    # -- per flow ----------------------------------------------------------------
    def new_flows(self, count: int) -> int:
        """``count`` zeroed ``ndpi_flow_struct`` one after the other, from nDPI's allocator (the first's
        address); :attr:`free` frees them, once :meth:`clear_flow` has cleared each that was used.

        Bare addresses rather than ctypes buffers: 1 M flows nDPI is inspecting
        would otherwise carry 1 M ctypes objects (~150 bytes each with the
        allocation's own overhead).
        """
        flows = self._calloc(count, self.flow_size)
        if not flows:
            raise MemoryError(f"ndpi_calloc failed for {count} flow structs")
        return int(flows)

    def clear_flow(self, flow: int) -> None:
        """Free what nDPI allocated inside a flow struct and zero it, as :meth:`new_flows` made it."""
        self._free_flow_data(flow)
        ctypes.memset(flow, 0, self.flow_size)

    def giveup(self, module: int, flow: int, guess: bool) -> Protocol:
        guessed = c_uint8(0)
        return self._giveup(module, flow, 1 if guess else 0, ctypes.byref(guessed))

    @staticmethod
    def confidence(flow: int) -> int:
        """The flow's ``ndpi_confidence_t`` (read from the struct: 4.2 has no getter)."""
        return c_int.from_address(flow + FLOW_CONFIDENCE_OFFSET).value

    def confidence_name(self, value: int) -> str:
        return _text(self.lib.ndpi_confidence_get_name(value)) or f"confidence {value}"

    def host(self, flow: int) -> str:
        """``host_server_name``: HTTP Host, TLS/QUIC SNI, DNS query, DHCP/NetBIOS name…"""
        return _text(self.lib.ndpi_get_flow_name(flow))

    # -- names -------------------------------------------------------------------
    def label(self, module: int, proto: Protocol) -> str:
        """nDPI's own ``Master.App`` label, exactly as ndpiReader prints it."""
        buf = ctypes.create_string_buffer(_LABEL_BUFFER)
        return _text(self.lib.ndpi_protocol2name(module, proto, buf, _LABEL_BUFFER))

    def protocol_name(self, module: int, proto_id: int) -> str:
        return _text(self.lib.ndpi_get_proto_name(module, proto_id))

    def protocol_names(self, module: int) -> list[str]:
        """Every protocol the module knows, by id (index 0 is ``Unknown``)."""
        count = int(self.lib.ndpi_get_num_supported_protocols(module))
        return [self.protocol_name(module, i) for i in range(count)]

    def category_name(self, module: int, category: int) -> str:
        return _text(self.lib.ndpi_category_get_name(module, category))
