"""The golden model: bit-exact integer emulation of a QModel.

This is the specification of the hardware (``docs/datapath.md``): the
gateware must produce the same integers. It runs a batch of sequences at
once. Matrix-vector products use float32 or float64 BLAS, exact because
every partial sum is an integer below the float's exact range (checked,
:func:`exact_float`). Everything else is integer arithmetic by the rules of
:mod:`deltarnn.spec.contract`: NumPy for the delta encoding of whole
sequences, and the compiled kernels of :mod:`deltarnn.quant.kernels` for
requantization and the per-step cell updates.

Two facts make it fast without changing a single integer:

- an accumulator that starts at 0 and adds ``W[:, j] * d_j`` for every
  emitted delta equals ``W @ ref`` at every step (integer sums telescope), so
  the input (x) path of a layer is one matrix product over all time steps;
- only the hidden (h) path is sequential; it accumulates deltas step by
  step, as the hardware does.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from deltarnn.spec import contract as C
from deltarnn.quant import kernels
from deltarnn.quant.qmodel import QActivation, QDirection, QMatrix, QModel

_EXACT_BITS = 53
#: Bits of one float parameter: the reference of the compression figures.
FLOAT_BITS = 32
#: float32 products are exact while every partial sum stays below 2**24.
_EXACT_BITS_F32 = 24


class EmulationError(ValueError):
    """Bad input to the emulator (shape, type, non-finite values)."""


def eliminated_pct(macs_needed: int, macs_dense: int) -> float:
    """Percentage of the dense multiply-accumulates that the deltas make unnecessary (0 when none)."""
    return 100.0 * (1.0 - macs_needed / macs_dense) if macs_dense else 0.0


def compression_pct(weight_bits: int, float_bits: int) -> float:
    """Percentage of the float model's bits that the quantized model does not store."""
    return 100.0 * (1.0 - weight_bits / float_bits)


@dataclass
class PathStats:
    """Work of one path: dense MACs against the MACs the deltas need."""

    rows: int
    cols: int
    elements: int = 0
    deltas: int = 0
    macs_dense: int = 0
    macs_needed: int = 0

    @property
    def eliminated_pct(self) -> float:
        return eliminated_pct(self.macs_needed, self.macs_dense)

    def add(self, elements: int, deltas: int, rows: int) -> None:
        """Count ``elements`` inputs, ``deltas`` of them emitted, into a matrix of ``rows`` rows."""
        self.elements += elements
        self.deltas += deltas
        self.macs_dense += elements * rows
        self.macs_needed += deltas * rows

    def merge(self, other: PathStats) -> None:
        """Add the counts of ``other`` (the same path on other inputs)."""
        self.elements += other.elements
        self.deltas += other.deltas
        self.macs_dense += other.macs_dense
        self.macs_needed += other.macs_needed

    def as_dict(self) -> dict:
        return {"rows": self.rows, "cols": self.cols, "elements": self.elements, "deltas": self.deltas,
                "macs_dense": self.macs_dense, "macs_needed": self.macs_needed,
                "eliminated_pct": self.eliminated_pct}


@dataclass
class Stats:
    """Operation counts per path and model size."""

    paths: dict[str, PathStats]
    weight_bits: int
    float_bits: int

    @classmethod
    def for_model(cls, qm: QModel, paths: dict[str, PathStats]) -> Stats:
        """The counts ``paths`` with the sizes of ``qm`` (stored bits against float parameters)."""
        return cls(paths, qm.storage_bits(), FLOAT_BITS * qm.float_params)

    @property
    def macs_dense(self) -> int:
        return sum(p.macs_dense for p in self.paths.values())

    @property
    def macs_needed(self) -> int:
        return sum(p.macs_needed for p in self.paths.values())

    @property
    def eliminated_pct(self) -> float:
        return eliminated_pct(self.macs_needed, self.macs_dense)

    @property
    def compression_pct(self) -> float:
        return compression_pct(self.weight_bits, self.float_bits)

    def op_counts(self) -> dict:
        """The operation counts alone: totals, eliminated % and every path's :meth:`PathStats.as_dict`."""
        return {"macs_dense": self.macs_dense, "macs_needed": self.macs_needed,
                "eliminated_pct": self.eliminated_pct, "paths": {k: v.as_dict() for k, v in self.paths.items()}}

    def as_dict(self) -> dict:
        counts = self.op_counts()
        paths = counts.pop("paths")
        return {**counts, "weight_bits": self.weight_bits, "float_bits": self.float_bits,
                "compression_pct": self.compression_pct, "paths": paths}


@dataclass
class EmulationResult:
    """Outputs of :func:`emulate`.

    ``outputs_fx``: fixed-point integers of the last stage (head or last
    layer), ``(batch, time, output_size)``; ``outputs``: the same as floats;
    ``layer_outputs_fx``: every layer's h, ``(batch, time, dirs*hidden)``.
    """

    outputs_fx: np.ndarray
    layer_outputs_fx: list[np.ndarray]
    stats: Stats
    input_q: np.ndarray = field(repr=False, default=None)
    #: per path, deltas emitted at each step ``(batch, time)`` (both directions summed)
    step_deltas: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    @property
    def outputs(self) -> np.ndarray:
        return (self.outputs_fx / C.FX_ONE).astype(np.float32)


# --- building blocks ----------------------------------------------------------------


def delta_encode(q: np.ndarray, theta: int) -> tuple[np.ndarray, np.ndarray]:
    """Delta-encode integer sequences ``q`` of shape ``(batch, time, n)``.

    Per element: ``d = q - ref``; when ``|d| > theta`` the delta is emitted
    and ``ref = q``. References start at 0. Returns the reference after each
    step and where deltas fired, both ``(batch, time, n)``.
    """
    q = np.ascontiguousarray(q)
    refs = np.empty_like(q)
    fired = np.empty(q.shape, dtype=bool)
    kernels.delta_encode(q, theta, refs, fired)
    return refs, fired


def exact_float(fan_in: int, wbits: int, vmax: int) -> type:
    """The narrowest float type whose BLAS products of these integers are exact."""
    bound = fan_in * C.qmax(wbits) * vmax
    return np.float32 if bound < 1 << _EXACT_BITS_F32 else np.float64


def rounding_constants(m: QMatrix) -> np.ndarray:
    """Per row, what requantization adds before its shift: ``2**(shift-1)`` (round half up), 0 for no shift."""
    return np.full(m.rows, (1 << (m.shift - 1)) if m.shift else 0, dtype=np.int64)


def requantization(m: QMatrix) -> tuple:
    """What the kernels requantize ``m``'s accumulators with: ``(mult, rounding, shift)`` (int64 arrays, int)."""
    return m.mult.astype(np.int64), rounding_constants(m), m.shift


def exact_product(v: np.ndarray, m: QMatrix) -> np.ndarray:
    """``v @ m.weights.T`` over the last axis ``(N, rows)``, exact in float32 or float64 BLAS (:func:`exact_float`)."""
    ft = exact_float(m.cols, m.wbits, int(np.abs(v).max(initial=0)))
    return v.reshape(-1, v.shape[-1]).astype(ft) @ m.weights.T.astype(ft)


def matvec_fx(v: np.ndarray, m: QMatrix) -> np.ndarray:
    """``requantize(v @ m.weights.T)`` over the last axis, as int32 fixed point.

    The product is :func:`exact_product`; requantization
    (:func:`deltarnn.spec.contract.requantize` with the matrix's row
    multipliers) runs compiled (:func:`deltarnn.quant.kernels.requantize_rows`).
    """
    prod = exact_product(v, m)
    out = np.empty(prod.shape, dtype=np.int32)
    kernels.requantize_rows(prod, *requantization(m), out)
    return out.reshape(*v.shape[:-1], m.rows)


def quantize_path_input(values: np.ndarray, act: QActivation, float_input: bool) -> np.ndarray:
    """The integers one path's matrix sees, before delta encoding."""
    if float_input:
        return C.quantize_float_input(values, act.scale, act.bits)
    return C.quantize_act(values, act.mult, act.shift, act.bits)


# --- the model ------------------------------------------------------------------------


def _direction(qm: QModel, layer_index: int, d: QDirection, q_x: np.ndarray, reverse: bool,
               dense: bool, stats: dict[str, PathStats], step_deltas: dict[str, np.ndarray]) -> np.ndarray:
    """Run one direction of one layer over a whole batch; return h ``(B, T, H)``."""
    layer = qm.layers[layer_index]
    if reverse:
        q_x = q_x[:, ::-1]
    bsz, steps, _ = q_x.shape
    hs = qm.hidden_size
    ref_x, fired = (q_x, q_x != 0) if dense else delta_encode(q_x, layer.x_act.theta)
    _count(stats[f"{layer_index}.x"], d.x, fired, dense)
    _per_step(step_deltas, f"{layer_index}.x", fired.sum(axis=-1), reverse)
    vec = {k: v.astype(np.int64) for k, v in d.vectors.items()}
    # Every fixed-point value fits 16 bits: int32 holds them; the kernels compute in int64.
    if qm.cell == "sru":
        rqx = matvec_fx(ref_x, d.x)
        hw = rqx[:, :, 3 * hs:] if d.highway is None else \
            C.requantize(ref_x, d.highway[0], d.highway[1]).astype(np.int32)
        out = np.empty((bsz, steps, hs), dtype=np.int64)
        kernels.sru_sequence(rqx, hw, vec["vf"], vec["vr"], vec["bias"], out)
    else:
        out, emitted = _h_path(qm.cell, d, layer.h_act, ref_x, vec, dense)
        out = out.transpose(1, 0, 2)
        # the deltas emitted at step t feed the product of step t + 1; h_{-1} = 0 is no work for any
        # implementation: steps 1..T-1 only
        per_step = np.zeros((bsz, steps), dtype=np.int64)
        per_step[:, 1:] = emitted[:-1].T
        _per_step(step_deltas, f"{layer_index}.h", per_step, reverse)
        stats[f"{layer_index}.h"].add(bsz * (steps - 1) * hs, int(per_step.sum()), d.h.rows)  # d.h.cols == hs
    return out[:, ::-1] if reverse else out


def _h_path(cell: str, d: QDirection, act: QActivation, ref_x: np.ndarray, vec: dict, dense: bool):
    """The sequential part of one direction: x references ``(B, T, N)`` -> h ``(T, B, H)`` and deltas emitted ``(T, B)``.

    The x path's product covers every step in one BLAS call; its output is
    time-major, so that every step's rows are contiguous for the kernel.
    """
    bsz, steps, _ = ref_x.shape
    hs = d.h.cols
    prod_x = exact_product(ref_x.transpose(1, 0, 2), d.x).reshape(steps, bsz, d.x.rows)
    out = np.empty((steps, bsz, hs), dtype=np.int64)
    emitted = np.empty((steps, bsz), dtype=np.int64)
    c = np.zeros((bsz, hs), dtype=np.int64)
    ref_h = np.zeros((bsz, hs), dtype=np.int64)
    acc_h = np.zeros((bsz, d.h.rows), dtype=np.int64)
    ft = exact_float(d.h.cols, d.h.wbits, 2 * C.qmax(act.bits))
    w_h = d.h.weights.T.astype(ft)
    vin = np.zeros((bsz, hs), dtype=ft)         # the h path's product input
    prod_h = np.zeros((bsz, d.h.rows), dtype=ft)  # h_{-1} = 0: no product at step 0
    h_prev = np.zeros((bsz, hs), dtype=np.int64)
    rq_x, rq_h = requantization(d.x), requantization(d.h)
    quant = (act.mult, act.shift, act.bits, act.theta)
    bias_hn = vec.get("bias_hn", vec["bias"])
    code = kernels.CELL_CODE[cell]
    for t in range(steps):
        if t:
            np.matmul(vin, w_h, out=prod_h)
            h_prev = out[t - 1]
        kernels.recurrent_step(code, prod_x[t], rq_x, prod_h, acc_h, rq_h, vec["bias"], bias_hn, c, h_prev, quant,
                               dense, ref_h, vin, out[t], emitted[t])
    return out, emitted


def _per_step(step_deltas: dict[str, np.ndarray], name: str, counts: np.ndarray, reverse: bool) -> None:
    counts = counts[:, ::-1] if reverse else counts
    step_deltas[name] = step_deltas[name] + counts if name in step_deltas else counts.copy()


def _count(p: PathStats, m: QMatrix, fired: np.ndarray, dense: bool) -> None:
    p.add(fired.size, fired.size if dense else int(np.count_nonzero(fired)), m.rows)


def path_stats(qm: QModel) -> dict[str, PathStats]:
    """Zero counts for every path of ``qm`` (rows summed over its directions)."""
    return {name: PathStats(rows=sum(m.rows for m in qm.matrices(name)), cols=qm.matrices(name)[0].cols)
            for name in qm.paths()}


def check_input(qm: QModel, x: np.ndarray) -> np.ndarray:
    """Validate a float input batch ``(batch, time, input_size)``."""
    x = np.asarray(x)
    if x.ndim == 2:
        raise EmulationError(
            f"input has shape {x.shape}; expected (batch, time, {qm.input_size}): add a batch axis")
    if x.ndim != 3 or x.shape[2] != qm.input_size:
        raise EmulationError(f"input has shape {x.shape}; expected (batch, time, {qm.input_size})")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise EmulationError(f"input has shape {x.shape}: it holds no time steps")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise EmulationError(f"input must be numeric, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise EmulationError("input contains NaN or infinite values")
    return x.astype(np.float32)


def default_threads(batch: int) -> int:
    """Threads :func:`emulate` uses by default: one per CPU this process may run on, at most one per sequence."""
    return max(1, min(batch, len(os.sched_getaffinity(0))))


def emulate(qm: QModel, x: np.ndarray, dense: bool = False, threads: int | None = None) -> EmulationResult:
    """Run the QModel on float inputs ``x`` ``(batch, time, input_size)``.

    ``dense=True`` bypasses delta encoding (every path recomputes its full
    product each step): the reference the delta emulation must equal when
    all thresholds are 0. The sequences of a batch are independent: they are
    split over ``threads`` threads (default :func:`default_threads`), whose
    results are joined in order, equal to one thread's.
    """
    x = check_input(qm, x)
    need = qm.accumulator_bits()
    if need > min(C.ACC_BITS, _EXACT_BITS):
        raise EmulationError(f"model needs {need}-bit accumulators, beyond the exact range")
    threads = default_threads(len(x)) if threads is None else min(int(threads), len(x))
    if threads < 1:
        raise EmulationError(f"threads must be at least 1, got {threads}")
    with threadpool_limits(1, user_api="blas"):  # threads only slow the per-step products, which are small
        if threads == 1:
            return _emulate(qm, x, dense)
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(lambda part: _emulate(qm, part, dense), np.array_split(x, threads)))
    return _join(qm, parts)


def _join(qm: QModel, parts: list[EmulationResult]) -> EmulationResult:
    """One result of the emulations of consecutive parts of a batch."""
    paths = path_stats(qm)
    for r in parts:
        for name, p in r.stats.paths.items():
            paths[name].merge(p)

    def cat(arrays):
        return np.concatenate(arrays, axis=0)

    return EmulationResult(cat([r.outputs_fx for r in parts]),
                           [cat(layer) for layer in zip(*(r.layer_outputs_fx for r in parts))],
                           Stats.for_model(qm, paths), cat([r.input_q for r in parts]),
                           {name: cat([r.step_deltas[name] for r in parts]) for name in parts[0].step_deltas})


def _emulate(qm: QModel, x: np.ndarray, dense: bool) -> EmulationResult:
    """:func:`emulate` on one thread, for checked input."""
    paths = path_stats(qm)
    layer_outputs = []
    step_deltas: dict[str, np.ndarray] = {}
    values = x
    input_q = None
    for i, layer in enumerate(qm.layers):
        q_x = quantize_path_input(values, layer.x_act, float_input=i == 0)
        if i == 0:
            input_q = q_x
        outs = [_direction(qm, i, d, q_x, reverse=j == 1, dense=dense, stats=paths, step_deltas=step_deltas)
                for j, d in enumerate(layer.directions)]
        values = np.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]
        layer_outputs.append(values)
    if qm.head is not None:
        head = qm.head
        q = quantize_path_input(values, head.act, float_input=False)
        ref, fired = (q, q != 0) if dense else delta_encode(q, head.act.theta)
        _count(paths["head.x"], head.matrix, fired, dense)
        _per_step(step_deltas, "head.x", fired.sum(axis=-1), False)
        values = C.fx_add(matvec_fx(ref, head.matrix).astype(np.int64), head.bias)
    return EmulationResult(values, layer_outputs, Stats.for_model(qm, paths), input_q, step_deltas)
