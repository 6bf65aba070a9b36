"""The device's memory map, shared by the gateware and the host.

A core is elaborated with :class:`DeviceParams` (lanes, maximum sizes,
widths). Every memory region and register address below is a function of
those parameters alone, so ``hw`` builds the memories from this module and
the host packs a QModel into the same places with :func:`pack`. Nothing here
imports ``hw``.

Command words (the core's ``cmd`` stream): ``(op, addr, data)``; responses
are 32-bit words. See ``docs/gateware.md`` for the protocol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum

import numpy as np

from . import contract as C
from .qmodel import QModel

CELL_CODES = {"lstm": 0, "gru": 1, "ligru": 2, "sru": 3}
#: Fixed-point vector blocks per layer (each H long).
VEC_BLOCKS = {"lstm": 4, "gru": 4, "ligru": 2, "sru": 4}
#: Row blocks (each H rows) of the x-path and h-path matrices on the device.
X_BLOCKS = {"lstm": 4, "gru": 3, "ligru": 2, "sru": 4}
H_BLOCKS = {"lstm": 4, "gru": 3, "ligru": 2, "sru": 0}

ADDR_BITS = 24
REGION_SHIFT = 20
DATA_BITS = 32


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


def layer_reg(layer: int, reg: LayerReg) -> int:
    return 0x10 + 0x10 * layer + int(reg)


def addr(region: Region, offset: int) -> int:
    return (int(region) << REGION_SHIFT) | offset


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class DeviceFitError(ValueError):
    """The model does not fit the device's parameters."""


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
        if self.lanes < 1 or self.lanes & (self.lanes - 1):
            raise ValueError(f"lanes must be a power of two, got {self.lanes}")
        if not C.MIN_BITS <= self.wmem_bits <= C.MAX_BITS or not C.MIN_BITS <= self.abits <= C.MAX_BITS:
            raise ValueError("weight and activation widths must be 2..16")
        if not 2 <= self.acc_bits <= C.ACC_BITS:
            raise ValueError(f"acc_bits must be 2..{C.ACC_BITS}")

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

    # --- fitting a model -------------------------------------------------------------------

    def check_fits(self, qm: QModel) -> None:
        """Raise :class:`DeviceFitError` naming the first reason ``qm`` cannot run here."""
        problems = []
        if qm.cell != self.cell:
            problems.append(f"the model is an {qm.cell.upper()} but the core was built for {self.cell.upper()}")
        if qm.bidirectional:
            problems.append("bidirectional layers need the whole sequence first; the device runs "
                            "unidirectional models only")
        if qm.num_layers > self.max_layers:
            problems.append(f"{qm.num_layers} layers > the core's {self.max_layers}")
        if qm.input_size > self.max_input:
            problems.append(f"input size {qm.input_size} > the core's {self.max_input}")
        if qm.hidden_size > self.max_hidden:
            problems.append(f"hidden size {qm.hidden_size} > the core's {self.max_hidden}")
        if qm.num_classes > self.max_classes:
            problems.append(f"{qm.num_classes} classes > the core's {self.max_classes}")
        for name, act in qm.paths().items():
            if act.bits > self.abits:
                problems.append(f"path {name} has {act.bits}-bit activations > the core's {self.abits}")
            for m in qm.matrices(name):
                if m.wbits > self.wmem_bits:
                    problems.append(f"path {name} has {m.wbits}-bit weights > the core's {self.wmem_bits}-bit slots")
                    break
        if not problems and qm.accumulator_bits() > self.acc_bits:
            problems.append(f"it needs {qm.accumulator_bits()}-bit accumulators > the core's {self.acc_bits}")
        if problems:
            raise DeviceFitError("the model does not fit this core: " + "; ".join(dict.fromkeys(problems)))


# --- packing ----------------------------------------------------------------------------


@dataclass
class Image:
    """Memory contents and register values for one QModel on one core."""

    weights: np.ndarray   #: (weight_depth, lanes) int
    mult: np.ndarray      #: (acc_depth * lanes,) int
    vec: np.ndarray       #: (vec_depth,) int
    regs: dict[int, int]  #: register address -> value

    def writes(self) -> list[tuple[int, int]]:
        """``(addr, data)`` WRITE commands that load this image (non-zero memory words only)."""
        out = [(addr(Region.REG, a), v) for a, v in sorted(self.regs.items())]
        w = self.weights.reshape(-1)
        out += [(addr(Region.WEIGHT, int(i)), int(w[i]) & 0xFFFFFFFF) for i in np.flatnonzero(w)]
        out += [(addr(Region.MULT, int(i)), int(self.mult[i])) for i in np.flatnonzero(self.mult)]
        out += [(addr(Region.VEC, int(i)), int(self.vec[i]) & 0xFFFFFFFF) for i in np.flatnonzero(self.vec)]
        return out


def _place_matrix(img: Image, p: DeviceParams, m, w_base: int, acc_base: int, rows_order: np.ndarray) -> None:
    """Write matrix ``m`` (rows reordered by ``rows_order``) at ``w_base``, its multipliers at ``acc_base``."""
    w = m.weights[rows_order]
    rows, cols = w.shape
    words = ceil_div(rows, p.lanes)
    padded = np.zeros((cols, words * p.lanes), dtype=np.int64)
    padded[:, :rows] = w.T
    img.weights[w_base:w_base + cols * words] = padded.reshape(cols * words, p.lanes)
    img.mult[acc_base * p.lanes:acc_base * p.lanes + rows] = m.mult[rows_order]


def pack(qm: QModel, p: DeviceParams) -> Image:
    """Lay ``qm`` out in the memories of a core with parameters ``p``."""
    p.check_fits(qm)
    img = Image(np.zeros((p.weight_depth, p.lanes), dtype=np.int64), np.zeros(p.acc_depth * p.lanes, dtype=np.int64),
                np.zeros(p.vec_depth, dtype=np.int64), {})
    hs = qm.hidden_size
    regs = img.regs
    regs[Reg.LAYERS] = qm.num_layers
    regs[Reg.INPUT] = qm.input_size
    regs[Reg.HIDDEN] = hs
    regs[Reg.CLASSES] = qm.num_classes
    for i, layer in enumerate(qm.layers):
        d = layer.directions[0]
        x_rows = np.arange(d.x.rows)
        _place_matrix(img, p, d.x, p.weight_base(i, "x"), p.acc_base(i, "x"), x_rows)
        regs[layer_reg(i, LayerReg.X_SHIFT)] = d.x.shift
        xa = layer.x_act
        regs[layer_reg(i, LayerReg.XA_MULT)] = xa.mult
        regs[layer_reg(i, LayerReg.XA_SHIFT)] = xa.shift
        regs[layer_reg(i, LayerReg.XA_BITS)] = xa.bits
        regs[layer_reg(i, LayerReg.XA_THETA)] = xa.theta
        if d.h is not None:
            _place_matrix(img, p, d.h, p.weight_base(i, "h"), p.acc_base(i, "h"), np.arange(d.h.rows))
            ha = layer.h_act
            regs[layer_reg(i, LayerReg.H_SHIFT)] = d.h.shift
            regs[layer_reg(i, LayerReg.HA_MULT)] = ha.mult
            regs[layer_reg(i, LayerReg.HA_SHIFT)] = ha.shift
            regs[layer_reg(i, LayerReg.HA_BITS)] = ha.bits
            regs[layer_reg(i, LayerReg.HA_THETA)] = ha.theta
        if qm.cell == "sru":
            identity = d.highway is not None
            regs[layer_reg(i, LayerReg.HW_IDENTITY)] = int(identity)
            if identity:
                regs[layer_reg(i, LayerReg.HW_MULT)], regs[layer_reg(i, LayerReg.HW_SHIFT)] = d.highway
        vec = np.concatenate([d.vectors[k] for k in VECTOR_ORDER[qm.cell]])
        img.vec[p.vec_base(i):p.vec_base(i) + vec.size] = vec
    if qm.head is not None:
        h = qm.head
        _place_matrix(img, p, h.matrix, p.weight_base(p.max_layers, "x"), p.acc_base(p.max_layers, "x"),
                      np.arange(h.matrix.rows))
        regs[Reg.HEAD_SHIFT] = h.matrix.shift
        regs[Reg.HEAD_A_MULT] = h.act.mult
        regs[Reg.HEAD_A_SHIFT] = h.act.shift
        regs[Reg.HEAD_A_BITS] = h.act.bits
        regs[Reg.HEAD_THETA] = h.act.theta
        base = p.max_layers * p.layer_vec_words
        img.vec[base:base + h.bias.size] = h.bias
    return img


#: Order of a layer's fixed-point vectors in the vec region (blocks of H).
VECTOR_ORDER = {"lstm": ["bias"], "gru": ["bias", "bias_hn"], "ligru": ["bias"], "sru": ["bias", "vf", "vr"]}


# --- streaming ---------------------------------------------------------------------------


def input_deltas(qm: QModel, x: np.ndarray) -> list[list[tuple[int, int]]]:
    """Per time step, the layer-0 ``(index, delta)`` pairs the host sends for one sequence ``x`` (time, features)."""
    act = qm.layers[0].x_act
    q = C.quantize_float_input(x, act.scale, act.bits)
    ref = np.zeros(q.shape[1], dtype=np.int64)
    steps = []
    for t in range(q.shape[0]):
        d = q[t] - ref
        fired = np.flatnonzero(np.abs(d) > act.theta)
        ref[fired] = q[t][fired]
        steps.append([(int(j), int(d[j])) for j in fired])
    return steps
