# cython: language_level=3, boundscheck=False, wraparound=False
"""The header decode of :mod:`dpicore.decode.batch` (``decode_headers``), in C: one pass per frame.

numpy decodes a batch column by column, ~60 array operations over every
frame, about 0.13 µs a frame: 3% of a heuristics run on the real-client
benchmark input, and each ``-j`` worker pays it for every frame of the
file, its own or not.  This loop reads each frame's fields once and stops
at the first check a frame fails.  ``scripts/compile_core.py`` builds it
when a C compiler is there (``scripts/compile.txt``); without it, or while
this source differs from the one built, the import fails and ``batch``
decodes in numpy.  The two agree on which frames are decoded and on every
field of those; a frame left to the scalar decoder has zeros here where
numpy leaves garbage (nobody reads either).  tests/test_compiled.py holds
them equal on real captures, on every link type, and on cut and random
frames.

``link``: 0 Ethernet (up to two VLAN tags), 1 Linux cooked (SLL), 2 SLL2,
3 raw IP, 4 BSD loopback (the family in either byte order), as
``batch.decode_headers`` maps the link types.
"""

import numpy as np

from libc.stdint cimport int64_t, uint8_t, uint64_t

cdef enum:
    TCP = 6
    UDP = 17

# The int64 columns, in the order of batch.Headers' fields (and their count).
cdef enum:
    PROTO, VLAN, SRC, DST, SPORT, DPORT, FLAGS, PAYLEN, L3, PAY, IPEND, SEQ, PAYWIRE, _COLUMNS


cdef inline int64_t _be16(const unsigned char* b) noexcept nogil:
    return (<int64_t>b[0] << 8) | b[1]


cdef inline int64_t _be32(const unsigned char* b) noexcept nogil:
    return (<int64_t>b[0] << 24) | (<int64_t>b[1] << 16) | (<int64_t>b[2] << 8) | b[3]


cdef inline uint64_t _be64(const unsigned char* b) noexcept nogil:
    return (<uint64_t>_be32(b) << 32) | <uint64_t>_be32(b + 4)


cdef inline bint _tag(int64_t et) noexcept nogil:
    return et == 0x8100 or et == 0x88A8 or et == 0x9100


def decode(const unsigned char[::1] buf, const int64_t[:] off, const int64_t[:] cap, int link):
    """The fields of ``batch.Headers``, in its order, for the frames at ``off`` (``cap`` bytes each)."""
    cdef Py_ssize_t n = off.shape[0]
    cdef Py_ssize_t size = buf.shape[0]
    ok_a = np.zeros(n, dtype=np.bool_)
    ip6_a = np.zeros(n, dtype=np.bool_)
    cols = [np.zeros(n, dtype=np.int64) for _ in range(_COLUMNS)]  # Headers' int64 fields
    his = [np.zeros(n, dtype=np.uint64) for _ in range(2)]  # src_hi, dst_hi
    if n == 0:
        return (ok_a, *cols, ip6_a, *his)
    cdef uint8_t[::1] ok = ok_a.view(np.uint8)
    cdef uint8_t[::1] ip6 = ip6_a.view(np.uint8)
    cdef int64_t* c[_COLUMNS]  # each column's data, indexed c[FIELD][i]
    cdef uint64_t* hi[2]
    cdef int64_t[::1] column
    cdef uint64_t[::1] high
    cdef int k
    for k in range(_COLUMNS):
        column = cols[k]
        c[k] = &column[0]
    for k in range(2):
        high = his[k]
        hi[k] = &high[0]
    cdef const unsigned char* b = &buf[0] if size else NULL
    cdef Py_ssize_t i
    cdef int64_t o, end, et, l3, l4, l4wire, total, ihl, hlen, ipend, fam, fam_le, tag, pr, doff, plen
    cdef int version
    cdef bint v6
    with nogil:
        for i in range(n):
            o = off[i]
            end = o + cap[i]
            if o < 0 or end > size or end < o:
                continue  # not a record of this buffer (never, from batches())
            # The link layer: where the IP header starts, and whether it is IPv6 (else IPv4).
            if link <= 2:  # an ethertype: Ethernet (after its VLAN tags), Linux cooked, cooked v2
                if link == 0:
                    if o + 14 > end:
                        continue
                    et = _be16(b + o + 12)
                    l3 = o + 14
                    tag = 14
                    while tag <= 18 and _tag(et):  # 802.1Q and QinQ; the innermost tag wins
                        if o + tag + 4 > end:
                            break
                        c[VLAN][i] = _be16(b + o + tag) & 0x0FFF
                        et = _be16(b + o + tag + 2)
                        l3 = o + tag + 4
                        tag += 4
                elif link == 1:
                    if o + 16 > end:
                        continue
                    et = _be16(b + o + 14)
                    l3 = o + 16
                else:
                    if o + 2 > end:
                        continue
                    et = _be16(b + o)
                    l3 = o + 20
                if et != 0x0800 and et != 0x86DD:
                    continue
                v6 = et == 0x86DD
            elif link == 3:
                if o + 1 > end:
                    continue
                v6 = b[o] >> 4 == 6
                l3 = o
            elif link == 4:
                if o + 4 > end:
                    continue
                fam = _be32(b + o)
                fam_le = (<int64_t>b[o + 3] << 24) | (<int64_t>b[o + 2] << 16) | (<int64_t>b[o + 1] << 8) | b[o]
                if fam_le < fam:  # the smaller of the two byte orders, as the scalar decoder reads it
                    fam = fam_le
                v6 = fam == 10 or fam == 24 or fam == 28 or fam == 30
                if fam != 2 and not v6:
                    continue
                l3 = o + 4
            else:
                continue
            if l3 + 20 > end:
                continue
            version = b[l3] >> 4
            if v6:
                # Without extension headers (the next header is the transport) and with a payload length
                # (0 is a jumbogram): the rest, fragments included, goes to the scalar decoder.
                plen = _be16(b + l3 + 4)
                if l3 + 40 > end or version != 6 or plen == 0:
                    continue
                pr = b[l3 + 6]
                ipend = l3 + 40 + plen
                l4 = l3 + 40
                l4wire = plen
            else:
                ihl = (b[l3] & 0x0F) * 4
                total = _be16(b + l3 + 2)
                if version != 4 or ihl < 20 or total < ihl or _be16(b + l3 + 6) & 0x3FFF:
                    continue
                pr = b[l3 + 9]
                ipend = l3 + total
                l4 = l3 + ihl
                l4wire = total - ihl
            if ipend > end:  # Ethernet padding dropped, snap length tolerated
                ipend = end
            if pr == TCP:
                if l4 + 20 > end or l4 + 20 > ipend:
                    continue
                doff = (b[l4 + 12] >> 4) * 4
                if doff < 20 or l4 + doff > ipend:
                    continue
                hlen = doff
                c[FLAGS][i] = b[l4 + 13]
                c[SEQ][i] = _be32(b + l4 + 4)
            elif pr == UDP:
                if l4 + 8 > end or l4 + 8 > ipend:
                    continue
                hlen = 8
            else:
                continue
            ok[i] = 1
            c[PROTO][i] = pr
            if v6:
                ip6[i] = 1
                hi[0][i] = _be64(b + l3 + 8)
                hi[1][i] = _be64(b + l3 + 24)
                c[SRC][i] = <int64_t>_be64(b + l3 + 16)
                c[DST][i] = <int64_t>_be64(b + l3 + 32)
            else:
                c[SRC][i] = _be32(b + l3 + 12)
                c[DST][i] = _be32(b + l3 + 16)
            c[SPORT][i] = _be16(b + l4)
            c[DPORT][i] = _be16(b + l4 + 2)
            c[L3][i] = l3
            c[PAY][i] = l4 + hlen
            c[IPEND][i] = ipend
            c[PAYLEN][i] = ipend - (l4 + hlen)
            c[PAYWIRE][i] = l4wire - hlen if l4wire > hlen else 0
    return (ok_a, *cols, ip6_a, *his)
