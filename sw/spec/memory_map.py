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

from dataclasses import asdict, dataclass, replace
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

#: The most neurons a cell engine updates at once (:attr:`DeviceParams.engine_width`). An item of E
#: neurons takes at least E cycles (the delta encoder fused to the update takes its new h one per
#: cycle), so beyond a program's own ii (LiGRU and SRU 4, GRU 6, LSTM 8) more lanes buy less.
MAX_ENGINE_LANES = 8
#: MAC lanes per engine lane in a core of more than 8 lanes built without ``engine_lanes`` (8 or fewer,
#: an iCE40's: one neuron at a time). At 32 lanes, 4: an ECP5 85F's 2 x 256 GRU with 8 fits (199 of its
#: 208 block RAMs, two lanes reading each activation table) and its cell updates take 1 cycle a neuron
#: where 4 lanes take 1.5, but its step takes only 3 % fewer cycles, its synthesis record fell from 80.3
#: to 74.4 MHz, and its board build's placement estimated 52 MHz (its routing congested).
LANES_PER_ENGINE_LANE = 8

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
    CLEAR = 5   #: zero every memory and register, as at power-up (before loading another model)


class Error(IntEnum):
    """Bits of the sticky ``ERRORS`` register: a command the core refused (and did not execute)."""

    BAD_OP = 1 << 0      #: an opcode that is no :class:`Op`
    BAD_ADDR = 1 << 1    #: WRITE / READ of no register, a read-only one, no region, or beyond a memory
    BAD_VALUE = 1 << 2   #: a register value outside its range (:meth:`DeviceParams.reg_limits`; ``HIDDEN``
                         #: also a multiple of :attr:`DeviceParams.engine_width`), a delta
                         #: wider than the core's deltas
    BAD_INDEX = 1 << 3   #: a DELTA whose element index is not below ``INPUT``
    OVERFLOW = 1 << 4    #: a DELTA beyond the delta buffer's room
    NO_MODEL = 1 << 5    #: a STEP while ``LAYERS`` or ``HIDDEN`` is 0 (no outputs follow)


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
    HEAD_SLICES = 0x0D   #: weight slices of the head's matrix, minus 1 (see :func:`weight_slices`)
    HEAD_WBASE = 0x0E    #: weight word of the head matrix's column 0 (the host places every matrix)
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
    ID_MAX_WBITS = 0x109     #: the widest weight (sliced above ``ID_WMEM_BITS``)
    ID_WEIGHT_WORDS = 0x10A  #: words of the weight memory
    CYCLES = 0x110       #: cycles since RESET, low 32 bits (a READ latches the high 32 into ``CYCLES_HI``)
    STEP_CYCLES = 0x111  #: cycles of the last STEP
    STEPS = 0x112        #: STEPs since RESET
    ERRORS = 0x113       #: sticky :class:`Error` bits; a WRITE (any value) or CLEAR clears them
    CYCLES_HI = 0x114    #: high 32 bits of ``CYCLES`` at its last READ (64 bits never wrap)


class LayerReg(IntEnum):
    """Per-layer registers at ``LAYER_REGS + LAYER_STRIDE * layer`` (:func:`layer_reg`)."""

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
    X_SLICES = 13     #: weight slices of the x matrix, minus 1
    H_SLICES = 14
    X_WBASE = 15      #: weight word of the x matrix's column 0
    H_WBASE = 16


#: Address of layer 0's registers, and the distance between two layers'.
LAYER_REGS, LAYER_STRIDE = 0x200, 0x20


# --- register fields: a register holds the low bits of the word written to it ---------------

#: Width of a shift register (``0 .. SHIFT_MAX``).
SHIFT_BITS = C.SHIFT_MAX.bit_length()
#: Width of a register holding an activation width (``MIN_BITS .. MAX_BITS``).
WIDTH_BITS = C.MAX_BITS.bit_length()
#: Width of a threshold register: that of a delta of the widest activations.
THETA_BITS = C.delta_bits(C.MAX_BITS)
#: Widths of the head's registers (the sizes ``LAYERS`` .. ``CLASSES``, the slices and the
#: weight bases are as wide as the core's maxima need: :meth:`DeviceParams.head_reg_bits`).
HEAD_REG_BITS = {
    Reg.HEAD_SHIFT: SHIFT_BITS, Reg.HEAD_A_MULT: C.MULT_BITS, Reg.HEAD_A_SHIFT: SHIFT_BITS,
    Reg.HEAD_A_BITS: WIDTH_BITS, Reg.HEAD_THETA: THETA_BITS,
}
#: Widths of the per-layer registers (and :meth:`DeviceParams.layer_reg_bits`).
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
    return LAYER_REGS + LAYER_STRIDE * layer + int(reg)


def weight_slices(wbits: int, wmem_bits: int) -> int:
    """Slots of ``wmem_bits`` that hold one weight of ``wbits`` (a weight wider than the slot is split).

    A ``wbits`` weight ``w`` is stored as ``S = ceil(wbits / wmem_bits)``
    digits ``w = sum_s d_s 2**(s*wmem_bits)``: the low ``S - 1`` unsigned
    (``0 .. 2**wmem_bits - 1``), the top one signed. The MxV runs the ``S``
    slices of a column one after another into the same accumulators, each
    product shifted by ``s * wmem_bits``: exact, at ``S`` times the cycles.
    """
    return ceil_div(wbits, wmem_bits)


def weight_digits(w: np.ndarray, wmem_bits: int, slices: int) -> np.ndarray:
    """The ``slices`` slot values of every weight of ``w`` (:func:`weight_slices`), shape ``(slices, *w.shape)``.

    Slice ``s < slices - 1`` holds the unsigned digit ``(w >> s*wmem_bits) mod
    2**wmem_bits``, the top slice ``w >> (slices-1)*wmem_bits`` (signed), so
    ``w == sum_s digits[s] << s*wmem_bits``.
    """
    w = np.asarray(w, dtype=np.int64)
    top = (slices - 1) * wmem_bits
    lo, hi = -(1 << (top + wmem_bits - 1)), (1 << (top + wmem_bits - 1)) - 1
    if w.size and (w.min() < lo or w.max() > hi):
        raise ValueError(f"weights in [{w.min()}, {w.max()}] do not fit {slices} slices of {wmem_bits} bits")
    digits = [(w >> (s * wmem_bits)) & ((1 << wmem_bits) - 1) for s in range(slices - 1)]
    return np.stack(digits + [w >> top])


def addr(region: Region, offset: int) -> int:
    return (int(region) << REGION_SHIFT) | offset


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class DeviceParams:
    """Elaboration parameters of a core; everything else derives from them.

    ``lanes`` must be a power of two. ``wmem_bits`` is the weight slot width
    (weights of up to that many bits fit one slot), ``abits`` the widest
    activation, ``acc_bits`` the accumulator width. ``max_wbits`` (0: the slot
    width) is the widest weight the core runs: a matrix of wider weights
    than the slots is stored and run as :func:`weight_slices` slices, so a
    16-bit skipped path costs extra only on that path. ``weight_words`` (0:
    :attr:`largest_model_words`) is the depth of the weight memory.
    ``engine_lanes`` (0: :meth:`default_engine_lanes`) is how many neurons the
    cell engine updates at once (:attr:`engine_width`): a power of two that
    divides ``lanes`` and ``max_hidden``, at most :data:`MAX_ENGINE_LANES`, 1
    for SRU; a model runs when its hidden size is a multiple of it.
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
    max_wbits: int = 0
    weight_words: int = 0
    engine_lanes: int = 0

    def __post_init__(self):
        if self.cell not in CELL_CODES:
            raise ValueError(f"unknown cell {self.cell!r}")
        if min(self.max_input, self.max_hidden, self.max_layers) < 1 or self.max_classes < 0:
            raise ValueError("max_input, max_hidden and max_layers must be >= 1, max_classes >= 0")
        check_lanes(self.lanes)
        C.check_bits("wmem_bits", self.wmem_bits)
        if self.max_wbits:
            C.check_bits("max_wbits", self.max_wbits)
            if self.max_wbits < self.wmem_bits:
                raise ValueError(f"max_wbits ({self.max_wbits}) is narrower than the weight slots ({self.wmem_bits})")
        if self.weight_words and self.weight_words < 1:
            raise ValueError("weight_words must be >= 1 (0: the largest model's)")
        C.check_bits("abits", self.abits)
        if not 2 <= self.acc_bits <= C.ACC_BITS:
            raise ValueError(f"acc_bits must be 2..{C.ACC_BITS}")
        if self.engine_lanes:
            e = self.engine_lanes
            if e & (e - 1) or e > min(MAX_ENGINE_LANES, self.lanes) or self.lanes % e or self.max_hidden % e:
                raise ValueError(f"engine_lanes must be a power of two of at most {MAX_ENGINE_LANES} that divides "
                                 f"lanes ({self.lanes}) and max_hidden ({self.max_hidden}), got {e}")
            if e > 1 and self.cell == "sru":
                raise ValueError("an SRU core's engine updates one neuron at a time (engine_lanes 1): its highway "
                                 "reads the references one by one")
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

    def default_engine_lanes(self) -> int:
        """The engine width of a core built without ``engine_lanes``: above 8 MAC lanes one neuron per
        :data:`LANES_PER_ENGINE_LANE` of them, at most :data:`MAX_ENGINE_LANES`, a power of two that
        divides ``max_hidden``; 1 for SRU and at up to 8 lanes."""
        if self.cell == "sru" or self.lanes <= 8:
            return 1
        e = min(MAX_ENGINE_LANES, self.lanes // LANES_PER_ENGINE_LANE)
        while self.max_hidden % e:
            e //= 2
        return e

    @property
    def engine_width(self) -> int:
        """Neurons the cell engine updates at once: the width, in elements, of a word of the multiplier,
        vector and state memories (``engine_lanes``, or :meth:`default_engine_lanes`)."""
        return self.engine_lanes or self.default_engine_lanes()

    @property
    def engine_bits(self) -> int:
        """``log2(engine_width)``: the low bits of an element address that name its lane in a word."""
        return (self.engine_width - 1).bit_length()

    def engine_for(self, hidden: int) -> "DeviceParams":
        """This core with the most engine lanes, at most :attr:`engine_width`, that divide ``hidden`` (a model's
        hidden size must be a multiple of them)."""
        e = self.engine_width
        while hidden % e:
            e //= 2
        return self if e == self.engine_width else replace(self, engine_lanes=e)

    @property
    def mult_words(self) -> int:
        """Words of the multiplier memory (:attr:`engine_width` multipliers each)."""
        return ceil_div(self.acc_depth * self.lanes, self.engine_width)

    @property
    def vec_words(self) -> int:
        """Words of the vector memory (:attr:`engine_width` elements each)."""
        return ceil_div(self.vec_depth, self.engine_width)

    @property
    def state_words(self) -> int:
        """Words of each state memory, ``h`` and ``c`` (:attr:`engine_width` elements each)."""
        return ceil_div(self.state_depth, self.engine_width)

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
    def widest_weight(self) -> int:
        """The widest weight the core runs (``max_wbits``, or the slot width)."""
        return self.max_wbits or self.wmem_bits

    @property
    def max_slices(self) -> int:
        """Weight slices of the widest weight (1: no weight is split)."""
        return weight_slices(self.widest_weight, self.wmem_bits)

    @property
    def waddr_bits(self) -> int:
        """Width of a weight word address (and of the ``*_WBASE`` registers)."""
        return max(1, (self.weight_depth - 1).bit_length())

    @property
    def slice_bits(self) -> int:
        """Width of the ``*_SLICES`` registers (slices minus 1)."""
        return max(1, (self.max_slices - 1).bit_length())

    def head_reg_bits(self) -> dict[Reg, int]:
        """Widths of the head's registers: :data:`HEAD_REG_BITS`, and those that depend on the sizes."""
        return {**HEAD_REG_BITS, Reg.HEAD_SLICES: self.slice_bits, Reg.HEAD_WBASE: self.waddr_bits}

    def layer_reg_bits(self) -> dict[LayerReg, int]:
        """Widths of the per-layer registers: :data:`LAYER_REG_BITS`, and those that depend on the sizes."""
        return {**LAYER_REG_BITS, LayerReg.X_SLICES: self.slice_bits, LayerReg.H_SLICES: self.slice_bits,
                LayerReg.X_WBASE: self.waddr_bits, LayerReg.H_WBASE: self.waddr_bits}

    def reg_limits(self) -> dict[int, tuple[int, int]]:
        """The values every writable register accepts, ``address -> (lowest, highest)``.

        The core refuses a WRITE outside them (:data:`Error.BAD_VALUE`) and
        keeps the register's value; the host checks the same limits.
        """
        widths = {**self.head_reg_bits(), **{layer_reg(i, f): w for i in range(self.max_layers)
                                              for f, w in self.layer_reg_bits().items()}}
        limits = {int(a): (0, (1 << w) - 1) for a, w in widths.items()}
        limits.update({int(Reg.LAYERS): (0, self.max_layers), int(Reg.INPUT): (0, self.max_input),
                       int(Reg.HIDDEN): (0, self.max_hidden), int(Reg.CLASSES): (0, self.max_classes)})
        fields = {LayerReg.X_SHIFT: (0, C.SHIFT_MAX), LayerReg.H_SHIFT: (0, C.SHIFT_MAX),
                  LayerReg.XA_SHIFT: (0, C.SHIFT_MAX), LayerReg.HA_SHIFT: (0, C.SHIFT_MAX),
                  LayerReg.HW_SHIFT: (0, C.SHIFT_MAX), LayerReg.XA_BITS: (C.MIN_BITS, self.abits),
                  LayerReg.HA_BITS: (C.MIN_BITS, self.abits), LayerReg.X_SLICES: (0, self.max_slices - 1),
                  LayerReg.H_SLICES: (0, self.max_slices - 1), LayerReg.X_WBASE: (0, self.weight_depth - 1),
                  LayerReg.H_WBASE: (0, self.weight_depth - 1)}
        for i in range(self.max_layers):
            limits.update({layer_reg(i, f): v for f, v in fields.items()})
        limits.update({int(Reg.HEAD_SHIFT): (0, C.SHIFT_MAX), int(Reg.HEAD_A_SHIFT): (0, C.SHIFT_MAX),
                       int(Reg.HEAD_A_BITS): (C.MIN_BITS, self.abits), int(Reg.HEAD_SLICES): (0, self.max_slices - 1),
                       int(Reg.HEAD_WBASE): (0, self.weight_depth - 1)})
        return limits

    @property
    def largest_model_words(self) -> int:
        """Weight words of the largest model: every matrix at its maximum size, one of them (the
        largest) of the widest weights (:attr:`max_slices` slices), the others in one slot."""
        matrices = [self.max_input * self.x_words] + [self.max_hidden * self.x_words] * (self.max_layers - 1) \
            + [self.max_hidden * self.h_words] * self.max_layers + [self.max_hidden * self.head_words]
        return sum(matrices) + (self.max_slices - 1) * max(matrices)

    @property
    def weight_depth(self) -> int:
        """Words of the weight memory: ``weight_words``, or the largest model's.

        The host places the matrices one after another (their bases are
        registers), so a model fits when its words do.
        """
        return self.weight_words or self.largest_model_words

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


