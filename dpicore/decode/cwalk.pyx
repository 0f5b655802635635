# cython: language_level=3, boundscheck=False, wraparound=False
"""The pcap record walk of :func:`dpicore.decode.batch._walk`, in C.

Finding where each record of a chunk starts is the one step of reading a
pcap that cannot be vectorised (each record's length says where the next
one starts); as a Python loop it costs ~0.1 µs per record, about 2.5% of a
heuristics run on the real-client benchmark input.  ``scripts/compile_core.py``
builds this module when a C compiler is there (``scripts/compile.txt``);
without it, or while this source differs from the one built, the import
fails and ``batch`` walks in Python.  Both walks give the same answer:
tests/test_compiled.py holds them equal on real, cut and corrupt buffers.
"""

import numpy as np

from libc.stdint cimport int64_t, uint32_t


def walk_pcap(const unsigned char[::1] buf, bint big_endian):
    """(the start of every record that lies whole in ``buf``, as int64; where the walk stopped), as
    ``batch._walk`` finds them: a record's captured length is the 32-bit word 8 bytes into it, in the
    file's byte order, and nothing checks it against MAX_RECORD here either."""
    cdef Py_ssize_t n = buf.shape[0]
    cdef Py_ssize_t limit = n - 16
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t end
    cdef uint32_t cap
    found = np.empty(n // 16 + 1, dtype=np.int64)  # every record takes 16 bytes at least
    cdef int64_t[::1] starts = found
    while pos <= limit:  # so the length's four bytes, pos + 8 to pos + 11, lie in buf
        if big_endian:
            cap = (<uint32_t>buf[pos + 8] << 24) | (<uint32_t>buf[pos + 9] << 16) | (<uint32_t>buf[pos + 10] << 8) \
                | buf[pos + 11]
        else:
            cap = (<uint32_t>buf[pos + 11] << 24) | (<uint32_t>buf[pos + 10] << 16) | (<uint32_t>buf[pos + 9] << 8) \
                | buf[pos + 8]
        end = pos + 16 + cap
        if end > n:
            break
        starts[count] = pos
        count += 1
        pos = end
    return found[:count], pos
