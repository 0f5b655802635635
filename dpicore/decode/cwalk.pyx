# cython: language_level=3, boundscheck=False, wraparound=False
"""The record walks of :mod:`dpicore.decode.batch` (``_walk``, ``_walk_pcapng``), in C.

Finding where each record or block of a chunk starts is the one step of
reading a capture that cannot be vectorised (each one's length says where
the next starts); as a Python loop it costs ~0.1 µs per record, about 2.5%
of a heuristics run on the real-client benchmark input.
``scripts/compile_core.py`` builds this module when a C compiler is there
(``scripts/compile.txt``); without it, or while this source differs from
the one built, the import fails and ``batch`` walks in Python.  Both walks
give the same answer: tests/test_compiled.py holds them equal on real, cut
and corrupt buffers and on every kind of pcapng block.
"""

import numpy as np

from libc.stdint cimport int64_t, uint32_t


cdef inline uint32_t _u32(const unsigned char* b, bint big_endian) noexcept nogil:
    """The 32-bit word at ``b`` in the capture's byte order (a record may start at any byte)."""
    if big_endian:
        return (<uint32_t>b[0] << 24) | (<uint32_t>b[1] << 16) | (<uint32_t>b[2] << 8) | b[3]
    return (<uint32_t>b[3] << 24) | (<uint32_t>b[2] << 16) | (<uint32_t>b[1] << 8) | b[0]


def walk_pcap(const unsigned char[::1] buf, bint big_endian):
    """(the start of every record that lies whole in ``buf``, as int64; where the walk stopped), as
    ``batch._walk`` finds them: a record's captured length is the 32-bit word 8 bytes into it, in the
    file's byte order, and nothing checks it against MAX_RECORD here either."""
    cdef Py_ssize_t n = buf.shape[0]
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t end
    found = np.empty(n // 16 + 1, dtype=np.int64)  # every record takes 16 bytes at least
    cdef int64_t[::1] starts = found
    while pos <= n - 16:  # so the length's four bytes, pos + 8 to pos + 11, lie in buf
        end = pos + 16 + _u32(&buf[pos + 8], big_endian)
        if end > n:
            break
        starts[count] = pos
        count += 1
        pos = end
    return found[:count], pos


def walk_pcapng(const unsigned char[::1] buf, Py_ssize_t pos, bint big_endian, Py_ssize_t max_record):
    """(the start of every enhanced packet block from ``pos`` on that lies whole in ``buf`` and is long
    enough for its fields, as int64; where the walk stopped), as ``batch._walk_pcapng`` finds them.  The
    blocks it stops at are ``batch._NOT_WALKED``'s: section and interface headers, simple and obsolete
    packet blocks, and an enhanced one too short or not whole; others with a sound length are stepped over."""
    cdef Py_ssize_t n = buf.shape[0]
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t end
    cdef uint32_t btype, length
    found = np.empty(max(n - pos, 0) // 28 + 1, dtype=np.int64)  # an enhanced packet block takes 28 bytes at least
    cdef int64_t[::1] starts = found
    while pos <= n - 28:
        btype = _u32(&buf[pos], big_endian)
        length = _u32(&buf[pos + 4], big_endian)
        end = pos + length
        if btype == 6 and length >= 28 and end <= n:
            starts[count] = pos
            count += 1
        elif (btype == 0x0A0D0D0A or btype == 1 or btype == 2 or btype == 3 or btype == 6
              or length < 12 or length % 4 or length > max_record or end > n):
            break
        pos = end
    return found[:count], pos
