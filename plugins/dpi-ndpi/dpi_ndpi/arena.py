"""Where the layer's ``ndpi_flow_struct`` live: slots in blocks, not one allocation each.

malloc puts a 16-byte header before each 688-byte struct it hands out (a
704-byte chunk); a block of :data:`BLOCK` structs has one.  A flow names its
struct by slot number (1, 2, …), which fits in the one int an
:class:`~dpi_ndpi.detector.NdpiFlow` keeps with its packet count and view,
where an address would not: with the header, 32 bytes of every flow nDPI
is inspecting (the flow object has two slots, not four).

A released struct's nDPI data is freed and the struct zeroed at once (what
``ndpi_calloc`` gives), and the next flow takes the slot released last.  The
blocks are freed with the detection module (:meth:`Detector._free
<dpi_ndpi.detector.Detector>`), when its last flow is released: a process
that once tracked a million flows keeps their structs for the next ones, as
malloc's heap keeps such chunks for its next allocations.
"""

from __future__ import annotations

from typing import Any

#: Structs per block (a block of 688-byte structs is 688 KB: ``ndpi_calloc`` maps it, and a page of it
#: becomes resident when a flow first writes to it).
BLOCK_BITS = 10
BLOCK = 1 << BLOCK_BITS
_IN_BLOCK = BLOCK - 1


class FlowArena:
    """The flow structs of one detection module (see the module docstring)."""

    def __init__(self, abi: Any) -> None:
        self.abi = abi
        self.size: int = abi.flow_size
        #: Each block's address.
        self.blocks: list[int] = []
        #: Slots released, the last released last.
        self.released: list[int] = []
        #: Slots handed out so far from the blocks (the next new one is this + 1).
        self.made = 0

    def take(self) -> int:
        """A zeroed struct's slot number (1 or more)."""
        if self.released:
            return self.released.pop()
        made = self.made
        if made == len(self.blocks) << BLOCK_BITS:
            self.blocks.append(self.abi.new_flows(BLOCK))
        self.made = made + 1
        return made + 1

    def address(self, slot: int) -> int:
        i = slot - 1
        return self.blocks[i >> BLOCK_BITS] + (i & _IN_BLOCK) * self.size

    def give_back(self, slot: int) -> None:
        """Free what nDPI allocated inside the slot's struct, zero it, and keep it for the next flow."""
        self.abi.clear_flow(self.address(slot))
        self.released.append(slot)

    def close(self) -> None:
        """Free every block (no flow may still use a slot)."""
        blocks, self.blocks = self.blocks, []
        for block in blocks:
            self.abi.free(block)
        self.released.clear()
        self.made = 0
