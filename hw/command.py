"""The core's command word: opcode, address and data, as Amaranth shapes.

The numbers and widths are those of :mod:`deltarnn.spec.memory_map`, which
the host packs its commands with; this module only gives them shapes.
"""

from __future__ import annotations

from amaranth import unsigned
from amaranth.lib import data, enum

from deltarnn.spec import memory_map as M

__all__ = ["Op", "Region", "command_layout", "address_layout"]


class Op(enum.Enum, shape=M.OP_BITS):
    """Command opcodes, :class:`deltarnn.spec.memory_map.Op` as a shape."""

    WRITE = M.Op.WRITE.value
    READ = M.Op.READ.value
    DELTA = M.Op.DELTA.value
    STEP = M.Op.STEP.value
    RESET = M.Op.RESET.value
    CLEAR = M.Op.CLEAR.value


class Region(enum.Enum, shape=M.ADDR_BITS - M.REGION_SHIFT):
    """Memory regions, :class:`deltarnn.spec.memory_map.Region` as a shape (the top address bits)."""

    REG = M.Region.REG.value
    WEIGHT = M.Region.WEIGHT.value
    MULT = M.Region.MULT.value
    VEC = M.Region.VEC.value


def command_layout() -> data.StructLayout:
    """One command: ``op`` (:class:`Op`) in the low bits, then ``addr`` and ``data``.

    ``OP_BITS + ADDR_BITS + DATA_BITS`` (63) bits; ``addr`` is decoded with
    :func:`address_layout`.
    """
    return data.StructLayout({"op": Op, "addr": unsigned(M.ADDR_BITS), "data": unsigned(M.DATA_BITS)})


def address_layout() -> data.StructLayout:
    """A command address: ``offset`` in the low ``REGION_SHIFT`` bits, ``region`` (:class:`Region`) above."""
    return data.StructLayout({"offset": unsigned(M.REGION_SHIFT), "region": Region})
