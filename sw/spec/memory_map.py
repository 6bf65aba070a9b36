"""The device's memory map, register map and opcodes, shared by the gateware and the host.

A core is elaborated with :class:`DeviceParams` (lanes, maximum sizes,
widths). Every memory region and register address below is a function of
those parameters alone, so the gateware (:mod:`deltarnn.hw`) builds its
memories from this module and the host packs a QModel into the same places
(:func:`deltarnn.device.image.pack`). Like the rest of :mod:`deltarnn.spec`
it imports only numpy and the standard library.

Command words (the core's ``cmd`` stream): ``(op, addr, data)``; responses
are 32-bit words. See ``docs/gateware.md`` for the protocol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum

import numpy as np

from . import contract as C
from .cells import CELLS, H_GATES, X_GATES

#: The cell type a core reports in ``ID_CELL``.
CELL_CODES = {cell: code for code, cell in enumerate(CELLS)}
#: Fixed-point vector blocks per layer (each H long).
VEC_BLOCKS = {"lstm": 4, "gru": 4, "ligru": 2, "sru": 4}
#: Row blocks (each H rows) of the x-path and h-path matrices on the device.
#: They are the cells' gate rows, and for SRU one more x block: the highway
#: projection of a layer whose input and hidden sizes differ.
X_BLOCKS = {cell: X_GATES[cell] + (cell == "sru") for cell in CELLS}
H_BLOCKS = dict(H_GATES)

#: Command address: a region (:class:`Region`) above a ``REGION_SHIFT``-bit offset, which must
#: hold every element address of the largest core (:meth:`DeviceParams.region_sizes`).
ADDR_BITS = 28
REGION_SHIFT = 24
DATA_BITS = 32
#: Width of a command's ``op`` field (an :class:`Op`).
OP_BITS = 3


class Op(IntEnum):
    """Command opcodes."""

    WRITE = 0   #: write ``data`` at ``addr``
    READ = 1    #: respond with the word at ``addr`` (registers and counters)
    DELTA = 2   #: layer-0 input delta: ``addr`` = element index, ``data`` = delta (signed)
    STEP = 3    #: run one time step on the deltas given; respond with the outputs
    RESET = 4   #: clear every accumulator, reference and state (start of a sequence)


class Region(IntEnum):
    REG = 0
    WEIGHT = 1   #: element address ``word * P + lane``
    MULT = 2     #: per accumulator row, address ``acc_word * P + lane``
    VEC = 3      #: fixed-point vectors


class Reg(IntEnum):
    """Global registers (region 0). Per-layer registers follow at ``layer_reg``."""

    LAYERS = 0x00
    INPUT = 0x01
    HIDDEN = 0x02
    CLASSES = 0x03       #: 0: no head, outputs are the last layer's h
    HEAD_SHIFT = 0x08
    HEAD_A_MULT = 0x09
    HEAD_A_SHIFT = 0x0A
    HEAD_A_BITS = 0x0B
    HEAD_THETA = 0x0C
    # read-only identification and counters
    ID_CELL = 0x100
    ID_LANES = 0x101
    ID_MAX_INPUT = 0x102
    ID_MAX_HIDDEN = 0x103
    ID_MAX_LAYERS = 0x104
    ID_MAX_CLASSES = 0x105
    ID_WMEM_BITS = 0x106
    ID_ABITS = 0x107
    ID_ACC_BITS = 0x108
    CYCLES = 0x110       #: cycles since RESET (low 32 bits)
    STEP_CYCLES = 0x111  #: cycles of the last STEP
    STEPS = 0x112        #: STEPs since RESET
    DELTAS = 0x120       #: + 2*layer (x path), + 2*layer + 1 (h path); head at + 2*max_layers


class LayerReg(IntEnum):
    """Per-layer registers at ``0x10 + 0x10 * layer``."""

    X_SHIFT = 0      #: accumulator -> fixed point shift of the x matrix
    H_SHIFT = 1
    XA_MULT = 2      #: fixed point -> activation quantizer of the x path (layers > 0)
    XA_SHIFT = 3
    XA_BITS = 4
    XA_THETA = 5
    HA_MULT = 6
    HA_SHIFT = 7
    HA_BITS = 8
    HA_THETA = 9
    HW_MULT = 10     #: SRU highway from the x references
    HW_SHIFT = 11
    HW_IDENTITY = 12  #: 1: SRU highway is the x path itself; 0: a projection block


# --- register fields: a register holds the low bits of the word written to it ---------------

#: Width of a shift register (``0 .. SHIFT_MAX``).
SHIFT_BITS = C.SHIFT_MAX.bit_length()
#: Width of a register holding an activation width (``MIN_BITS .. MAX_BITS``).
WIDTH_BITS = C.MAX_BITS.bit_length()
#: Width of a threshold register: that of a delta of the widest activations.
THETA_BITS = C.delta_bits(C.MAX_BITS)
#: Widths of the head's registers (the sizes ``LAYERS`` .. ``CLASSES`` are as wide as the
#: core's maxima need).
HEAD_REG_BITS = {
    Reg.HEAD_SHIFT: SHIFT_BITS, Reg.HEAD_A_MULT: C.MULT_BITS, Reg.HEAD_A_SHIFT: SHIFT_BITS,
    Reg.HEAD_A_BITS: WIDTH_BITS, Reg.HEAD_THETA: THETA_BITS,
}
#: Widths of the per-layer registers.
LAYER_REG_BITS = {
    LayerReg.X_SHIFT: SHIFT_BITS, LayerReg.H_SHIFT: SHIFT_BITS,
    LayerReg.XA_MULT: C.MULT_BITS, LayerReg.XA_SHIFT: SHIFT_BITS, LayerReg.XA_BITS: WIDTH_BITS,
    LayerReg.XA_THETA: THETA_BITS,
    LayerReg.HA_MULT: C.MULT_BITS, LayerReg.HA_SHIFT: SHIFT_BITS, LayerReg.HA_BITS: WIDTH_BITS,
    LayerReg.HA_THETA: THETA_BITS,
    LayerReg.HW_MULT: C.MULT_BITS, LayerReg.HW_SHIFT: SHIFT_BITS, LayerReg.HW_IDENTITY: 1,
}


def check_lanes(lanes: int, error: type[Exception] = ValueError) -> int:
    """Return ``lanes`` if it is a power of two (the lane count of every core), else raise ``error``."""
    if lanes < 1 or lanes & (lanes - 1):
        raise error(f"lanes must be a power of two, got {lanes}")
    return lanes


def layer_reg(layer: int, reg: LayerReg) -> int:
    return 0x10 + 0x10 * layer + int(reg)


def addr(region: Region, offset: int) -> int:
    return (int(region) << REGION_SHIFT) | offset


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class DeviceParams:
    """Elaboration parameters of a core; everything else derives from them.

    ``lanes`` must be a power of two. ``wmem_bits`` is the weight slot width
    (weights of up to that many bits fit), ``abits`` the widest activation,
    ``acc_bits`` the accumulator width.
    """

    cell: str
    lanes: int = 4
    max_input: int = 16
    max_hidden: int = 40
    max_layers: int = 3
    max_classes: int = 8
    wmem_bits: int = 16
    abits: int = 16
    acc_bits: int = 48

    def __post_init__(self):
        if self.cell not in CELL_CODES:
            raise ValueError(f"unknown cell {self.cell!r}")
        check_lanes(self.lanes)
        C.check_bits("wmem_bits", self.wmem_bits)
        C.check_bits("abits", self.abits)
        if not 2 <= self.acc_bits <= C.ACC_BITS:
            raise ValueError(f"acc_bits must be 2..{C.ACC_BITS}")
        for region, size in self.region_sizes().items():
            if size > 1 << REGION_SHIFT:
                raise ValueError(f"a core of these sizes needs {size} addresses in its {region.name} region, more "
                                 f"than the command's {REGION_SHIFT}-bit offset holds ({1 << REGION_SHIFT}): "
                                 f"lower the maximum sizes or the lanes")

    def region_sizes(self) -> dict["Region", int]:
        """Addresses each memory region of the command stream spans (``WEIGHT`` and ``MULT`` per element)."""
        return {Region.WEIGHT: self.weight_depth * self.lanes, Region.MULT: self.acc_depth * self.lanes,
                Region.VEC: self.vec_depth}

    def as_dict(self) -> dict:
        return asdict(self)

    # --- derived sizes -----------------------------------------------------------------

    @property
    def delta_bits(self) -> int:
        return C.delta_bits(self.abits)

    @property
    def max_cols(self) -> int:
        """Widest x-path input (layer 0: input; above: hidden)."""
        return max(self.max_input, self.max_hidden)

    @property
    def x_words(self) -> int:
        """Accumulator words reserved per layer for the x path."""
        return ceil_div(X_BLOCKS[self.cell] * self.max_hidden, self.lanes)

    @property
    def h_words(self) -> int:
        return ceil_div(H_BLOCKS[self.cell] * self.max_hidden, self.lanes)

    @property
    def head_words(self) -> int:
        return ceil_div(max(self.max_classes, 1), self.lanes)

    @property
    def layer_acc_words(self) -> int:
        return self.x_words + self.h_words

    @property
    def acc_depth(self) -> int:
        return self.max_layers * self.layer_acc_words + self.head_words

    @property
    def layer_weight_words(self) -> int:
        return self.max_cols * self.x_words + self.max_hidden * self.h_words

    @property
    def weight_depth(self) -> int:
        return self.max_layers * self.layer_weight_words + self.max_hidden * self.head_words

    @property
    def layer_ref_words(self) -> int:
        return self.max_cols + self.max_hidden

    @property
    def ref_depth(self) -> int:
        return self.max_layers * self.layer_ref_words + self.max_hidden

    @property
    def layer_vec_words(self) -> int:
        return VEC_BLOCKS[self.cell] * self.max_hidden

    @property
    def vec_depth(self) -> int:
        return self.max_layers * self.layer_vec_words + self.max_classes

    @property
    def state_depth(self) -> int:
        return self.max_layers * self.max_hidden

    @property
    def dbuf_depth(self) -> int:
        return self.max_cols

    # --- bases (fixed layout) ------------------------------------------------------------

    def acc_base(self, layer: int, path: str) -> int:
        """Accumulator word base of ``path`` ("x", "h") of ``layer``, or the head (layer = max_layers)."""
        if layer == self.max_layers:
            return self.max_layers * self.layer_acc_words
        return layer * self.layer_acc_words + (self.x_words if path == "h" else 0)

    def weight_base(self, layer: int, path: str) -> int:
        if layer == self.max_layers:
            return self.max_layers * self.layer_weight_words
        return layer * self.layer_weight_words + (self.max_cols * self.x_words if path == "h" else 0)

    def ref_base(self, layer: int, path: str) -> int:
        if layer == self.max_layers:
            return self.max_layers * self.layer_ref_words
        return layer * self.layer_ref_words + (self.max_cols if path == "h" else 0)

    def vec_base(self, layer: int) -> int:
        return layer * self.layer_vec_words

    def state_base(self, layer: int) -> int:
        return layer * self.max_hidden


#: Order of a layer's fixed-point vectors in the vec region (blocks of H).
VECTOR_ORDER = {"lstm": ["bias"], "gru": ["bias", "bias_hn"], "ligru": ["bias"], "sru": ["bias", "vf", "vr"]}


