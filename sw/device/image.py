"""A QModel laid out in a core's memories, and a sequence turned into input deltas.

The memory map itself (:class:`~deltarnn.spec.memory_map.DeviceParams`,
regions, registers, opcodes) is shared with the gateware and lives in
:mod:`deltarnn.spec.memory_map`; this module is the host's side of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deltarnn.quant.golden import delta_encode
from deltarnn.quant.qmodel import QModel
from deltarnn.spec import contract as C
from deltarnn.spec.memory_map import (LAYER_REGS, LAYER_STRIDE, VECTOR_ORDER, DeviceParams, LayerReg, Reg, Region,
                                      addr, ceil_div, layer_reg, weight_digits, weight_slices)


class DeviceFitError(ValueError):
    """The model does not fit the device's parameters."""


@dataclass(frozen=True)
class MatrixPlace:
    """Where the host puts one matrix in the weight memory."""

    base: int     #: weight word of column 0
    slices: int   #: slots per weight (:func:`deltarnn.spec.memory_map.weight_slices`)
    words: int    #: weight words it occupies: ``cols * slices * ceil(rows / P)``


def weight_places(qm: QModel, p: DeviceParams) -> dict[str, MatrixPlace]:
    """The place of every path's matrix (``"0.x"``, ``"0.h"``, ..., ``"head.x"``), one after another from word 0."""
    places, base = {}, 0
    for name in qm.paths():
        m = qm.matrices(name)[0]
        slices = weight_slices(m.wbits, p.wmem_bits)
        words = m.cols * slices * ceil_div(m.rows, p.lanes)
        places[name] = MatrixPlace(base, slices, words)
        base += words
    return places


def weight_words(qm: QModel, p: DeviceParams) -> int:
    """Weight words ``qm`` needs on a core with ``p``'s lanes and slots."""
    return sum(pl.words for pl in weight_places(qm, p).values())



def check_fits(qm: QModel, params: DeviceParams) -> None:
    """Raise :class:`DeviceFitError` naming the first reason ``qm`` cannot run here."""
    problems = []
    if qm.cell != params.cell:
        problems.append(f"the model is an {qm.cell.upper()} but the core was built for {params.cell.upper()}")
    if qm.bidirectional:
        problems.append("bidirectional layers need the whole sequence first; the device runs "
                        "unidirectional models only")
    if qm.num_layers > params.max_layers:
        problems.append(f"{qm.num_layers} layers > the core's {params.max_layers}")
    if qm.input_size > params.max_input:
        problems.append(f"input size {qm.input_size} > the core's {params.max_input}")
    if qm.hidden_size > params.max_hidden:
        problems.append(f"hidden size {qm.hidden_size} > the core's {params.max_hidden}")
    if qm.hidden_size % params.engine_width:
        problems.append(f"hidden size {qm.hidden_size} is not a multiple of the {params.engine_width} neurons the "
                        f"core's engine updates at once (build the core for the model: deltarnn build --for)")
    if qm.num_classes > params.max_classes:
        problems.append(f"{qm.num_classes} classes > the core's {params.max_classes}")
    for name, act in qm.paths().items():
        if act.bits > params.abits:
            problems.append(f"path {name} has {act.bits}-bit activations > the core's {params.abits}")
        for m in qm.matrices(name):
            if m.wbits > params.widest_weight:
                problems.append(f"path {name} has {m.wbits}-bit weights > the core's widest, {params.widest_weight} "
                                f"bits (a core built with max_wbits {m.wbits} runs them as slices of its "
                                f"{params.wmem_bits}-bit slots)")
                break
    if not problems and qm.accumulator_bits() > params.acc_bits:
        problems.append(f"it needs {qm.accumulator_bits()}-bit accumulators > the core's {params.acc_bits}")
    if not problems and weight_words(qm, params) > params.weight_depth:
        problems.append(f"its weights need {weight_words(qm, params)} words of {params.lanes} slots > the core's "
                        f"{params.weight_depth}")
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

    def core_init(self) -> dict:
        """Keyword arguments of :class:`deltarnn.hw.core.Core` that build this image into the core."""
        return {"weights": self.weights, "mult": self.mult, "vec": self.vec, "regs": self.regs}

    def writes(self, every_word: bool = False) -> list[tuple[int, int]]:
        """``(addr, data)`` WRITE commands that load this image.

        The registers, then the weight, multiplier and vector words: the
        non-zero ones, or with ``every_word`` all of them. The non-zero ones
        load a device only after a CLEAR command (``Op.CLEAR``), which zeroes
        every memory: a device that held another model, or whose memories
        power up undefined (the iCE40's SPRAM), keeps old words where this
        image has zeros otherwise.
        """
        out = [(addr(Region.REG, a), v) for a, v in sorted(self.regs.items())]
        for region, words in ((Region.WEIGHT, self.weights.reshape(-1)), (Region.MULT, self.mult),
                              (Region.VEC, self.vec)):
            index = np.arange(words.size) if every_word else np.flatnonzero(words)
            out += [(addr(region, int(i)), int(words[i]) & 0xFFFFFFFF) for i in index]
        return out


def _place_matrix(img: Image, p: DeviceParams, m, place: MatrixPlace, acc_base: int) -> None:
    """Write matrix ``m`` at ``place`` (column by column, each column's slices one after another),
    its multipliers at ``acc_base``."""
    rows, cols = m.weights.shape
    words = ceil_div(rows, p.lanes)
    padded = np.zeros((cols, place.slices, words * p.lanes), dtype=np.int64)
    padded[:, :, :rows] = weight_digits(m.weights, p.wmem_bits, place.slices).transpose(2, 0, 1)
    img.weights[place.base:place.base + place.words] = padded.reshape(place.words, p.lanes)
    img.mult[acc_base * p.lanes:acc_base * p.lanes + rows] = m.mult


def pack(qm: QModel, p: DeviceParams) -> Image:
    """Lay ``qm`` out in the memories of a core with parameters ``p``."""
    check_fits(qm, p)
    img = Image(np.zeros((p.weight_depth, p.lanes), dtype=np.int64), np.zeros(p.acc_depth * p.lanes, dtype=np.int64),
                np.zeros(p.vec_depth, dtype=np.int64), {})
    hs = qm.hidden_size
    regs = img.regs
    regs[Reg.LAYERS] = qm.num_layers
    regs[Reg.INPUT] = qm.input_size
    regs[Reg.HIDDEN] = hs
    regs[Reg.CLASSES] = qm.num_classes
    places = weight_places(qm, p)
    for i, layer in enumerate(qm.layers):
        d = layer.directions[0]
        for path, (slices_reg, base_reg) in (("x", (LayerReg.X_SLICES, LayerReg.X_WBASE)),
                                             ("h", (LayerReg.H_SLICES, LayerReg.H_WBASE))):
            if f"{i}.{path}" in places:
                place = places[f"{i}.{path}"]
                _place_matrix(img, p, getattr(d, path), place, p.acc_base(i, path))
                regs[layer_reg(i, slices_reg)] = place.slices - 1
                regs[layer_reg(i, base_reg)] = place.base
        regs[layer_reg(i, LayerReg.X_SHIFT)] = d.x.shift
        xa = layer.x_act
        regs[layer_reg(i, LayerReg.XA_MULT)] = xa.mult
        regs[layer_reg(i, LayerReg.XA_SHIFT)] = xa.shift
        regs[layer_reg(i, LayerReg.XA_BITS)] = xa.bits
        regs[layer_reg(i, LayerReg.XA_THETA)] = xa.theta
        if d.h is not None:
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
        place = places["head.x"]
        _place_matrix(img, p, h.matrix, place, p.acc_base(p.max_layers, "x"))
        regs[Reg.HEAD_SLICES] = place.slices - 1
        regs[Reg.HEAD_WBASE] = place.base
        regs[Reg.HEAD_SHIFT] = h.matrix.shift
        regs[Reg.HEAD_A_MULT] = h.act.mult
        regs[Reg.HEAD_A_SHIFT] = h.act.shift
        regs[Reg.HEAD_A_BITS] = h.act.bits
        regs[Reg.HEAD_THETA] = h.act.theta
        base = p.max_layers * p.layer_vec_words
        img.vec[base:base + h.bias.size] = h.bias
    _check_registers(regs, p)
    return img


def register_name(address: int) -> str:
    """``HIDDEN``, ``layer 1 XA_THETA``: a register's name for messages."""
    if address >= LAYER_REGS:
        layer, field = divmod(address - LAYER_REGS, LAYER_STRIDE)
        return f"layer {layer} {LayerReg(field).name}"
    return Reg(address).name


def _check_registers(regs: dict[int, int], p: DeviceParams) -> None:
    """Clip thresholds to their registers (the core saturates them at its delta width, where every larger
    threshold acts alike) and refuse any other value the core would refuse, naming it."""
    limits = p.reg_limits()
    thetas = {int(Reg.HEAD_THETA)} | {layer_reg(i, f) for i in range(p.max_layers)
                                      for f in (LayerReg.XA_THETA, LayerReg.HA_THETA)}
    for a, v in regs.items():
        lo, hi = limits[int(a)]
        if int(a) in thetas:
            regs[a] = min(v, hi)
        elif not lo <= v <= hi:
            raise DeviceFitError(f"the model does not fit this core: its {register_name(int(a))} is {v}, the core "
                                 f"takes {lo}..{hi}")


# --- streaming ---------------------------------------------------------------------------


def input_deltas(qm: QModel, x: np.ndarray) -> list[list[tuple[int, int]]]:
    """Per time step, the layer-0 ``(index, delta)`` pairs the host sends for one sequence ``x`` (time, features).

    The delta rule is the golden model's (:func:`deltarnn.quant.golden.delta_encode`).
    """
    act = qm.layers[0].x_act
    return deltas_of(C.quantize_float_input(x, act.scale, act.bits), act.theta)


def deltas_of(q: np.ndarray, theta: int) -> list[list[tuple[int, int]]]:
    """Per time step, the ``(index, delta)`` pairs of the integer sequence ``q`` (time, n) at threshold ``theta``."""
    q = np.asarray(q, dtype=np.int64)
    refs, fired = delta_encode(q[None], theta)
    before = np.vstack([np.zeros_like(q[:1]), refs[0, :-1]])
    return [[(int(j), int(q[t, j] - before[t, j])) for j in np.flatnonzero(fired[0, t])] for t in range(q.shape[0])]
