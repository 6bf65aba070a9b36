"""The golden model: bit-exact integer emulation of a QModel.

This is the specification of the hardware (``docs/datapath.md``): the
gateware must produce the same integers. It runs a batch of sequences at
once. Matrix-vector products use float32 or float64 BLAS, exact because
every partial sum is an integer below the float's exact range (checked,
:func:`exact_float`). Everything else is integer arithmetic by the rules of
:mod:`deltarnn.spec.contract`, in the compiled kernels of
:mod:`deltarnn.quant.kernels`: the quantization and delta encoding of whole
input sequences, requantization and the per-step cell updates (exact
integers held in float64, so that they vectorise; see that module). The
time loop of an LSTM / GRU / LiGRU direction, its BLAS products included, is
one compiled call, free of the GIL.

Three facts make it fast without changing a single integer:

- an accumulator that starts at 0 and adds ``W[:, j] * d_j`` for every
  emitted delta equals ``W @ ref`` at every step (integer sums telescope), so
  the input (x) path's products of a layer are large matrix products over
  many time steps (:data:`X_CHUNK` at a time, and the whole sequence for SRU);
- only the hidden (h) path is sequential; its accumulators equal ``W_h @
  ref_h`` too, one product of the current references per step;
- everything runs time-major, so that every step's rows are contiguous.

Counting the work (:class:`Stats`, ``step_deltas``) follows the deltas the
hardware emits, one column of ``W`` per delta.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController

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


def _direction(qm: QModel, layer_index: int, d: QDirection, v: np.ndarray, quantize: bool, reverse: bool,
               dense: bool, stats: dict[str, PathStats], step_deltas: dict[str, np.ndarray], into: np.ndarray) -> None:
    """Run one direction of one layer over a whole batch: inputs ``v`` ``(B, T, N)`` -> h into ``into`` ``(B, T, H)``.

    ``v`` is the previous layer's fixed-point h (``quantize``) or the first
    layer's quantized input, C-contiguous. Time-major inside: every step's
    rows are contiguous for the kernels, which write each step's h into
    ``into`` (a view of the layer's output).
    """
    layer = qm.layers[layer_index]
    act = layer.x_act
    form_x = _form(d.x, act, recurrent=qm.cell != "sru")
    refs = _encode(f"{layer_index}.x", d.x, v, act, quantize, dense, reverse, form_x, stats, step_deltas)
    steps, bsz, n = refs.shape
    w_x = _weights(d.x, form_x)
    rq_x = kernels.requantization_exact(d.x, _bound(d.x, act))
    vec = {k: a.astype(np.float64) for k, a in d.vectors.items()}
    out = into[:, ::-1] if reverse else into  # in processing order
    if qm.cell == "sru":
        highway = (-1.0, 0.0) if d.highway is None else _scaled(*d.highway, C.qmax(act.bits), "highway")
        prod_x = (refs.reshape(-1, n) @ w_x).reshape(steps, bsz, d.x.rows)
        kernels.sru_sequence(prod_x, rq_x, refs, highway, vec["vf"], vec["vr"], vec["bias"], out)
    else:
        emitted = _h_path(qm.cell, d, layer.h_act, refs, w_x, form_x == "packed", rq_x, vec, dense, out)
        # the deltas emitted at step t feed the product of step t + 1; h_{-1} = 0 is no work for any
        # implementation: steps 1..T-1 only
        per_step = np.zeros((bsz, steps), dtype=np.int64)
        per_step[:, 1:] = emitted[:-1].T
        _per_step(step_deltas, f"{layer_index}.h", per_step[:, ::-1] if reverse else per_step)
        stats[f"{layer_index}.h"].add(bsz * (steps - 1) * d.h.cols, int(per_step.sum()), d.h.rows)


def _form(m: QMatrix, act: QActivation, recurrent: bool) -> str | type:
    """How the products of ``m`` (its inputs quantized by ``act``) are computed: ``"vnni"``, integer products
    (:func:`deltarnn.quant.kernels.gemm_vnni`, where the CPU has them and they are exact), ``"packed"``
    (:func:`_packs`), or BLAS in the narrowest exact float type (:func:`exact_float`). The first two only in
    the compiled time loops (``recurrent``: the LSTM, GRU and LiGRU paths); the SRU's and the head's products,
    one per sequence, are NumPy's."""
    if recurrent and kernels.VNNI and kernels.vnni_fits(m.cols, m.wbits, act.bits):
        return "vnni"
    if recurrent and _packs(m, act):
        return "packed"
    return exact_float(m.cols, m.wbits, C.qmax(act.bits))


def _weights(m: QMatrix, form: str | type) -> np.ndarray:
    """``m``'s weights transposed ``(cols, rows)``, C-contiguous, the right operand of its products in ``form``
    (:func:`_form`): as that float type, three rows' weights in each float64 column
    (:func:`deltarnn.quant.kernels.pack_columns`), or bytes in int32 (:func:`deltarnn.quant.kernels.pack_vnni`)."""
    if form == "vnni":
        return kernels.pack_vnni(m.weights.T)
    if form == "packed":
        return kernels.pack_columns(m.weights.T)
    return np.ascontiguousarray(m.weights.T, dtype=form)


def _packs(m: QMatrix, act: QActivation) -> bool:
    """Whether the products of ``m`` (its inputs quantized by ``act``) are packed, three accumulators in each
    float64 (:func:`deltarnn.quant.kernels.pack_columns`): where every accumulator is below
    :data:`deltarnn.quant.kernels.PACK_LIMIT`, a third of the columns in float64 cost less than all of them in
    float32."""
    return _bound(m, act) < kernels.PACK_LIMIT


def _bound(m: QMatrix, act: QActivation) -> int:
    """A bound on the magnitude of ``m``'s accumulators: every reference is a quantized value of ``act``."""
    return m.cols * C.qmax(m.wbits) * C.qmax(act.bits)


def _scaled(mult: int, shift: int, vmax: int, what: str) -> tuple[float, float]:
    """``(mult * 2**-shift, 1/2 or 0)``: the float64 form of ``round_shift(v * mult, shift)`` for ``|v| <= vmax``
    (:mod:`deltarnn.quant.kernels`), exact while ``vmax * mult + 2**(shift-1) < 2**53``."""
    if vmax * int(mult) + ((1 << shift) >> 1) >= 1 << _EXACT_BITS:
        raise EmulationError(f"{what} multiplier {mult} >> {shift} is beyond the exact range")
    return int(mult) * 2.0 ** -shift, 0.5 if shift else 0.0


def _encode(name: str, m: QMatrix, v: np.ndarray, act: QActivation, quantize: bool, dense: bool,
            reverse: bool, form: str | type, stats: dict[str, PathStats],
            step_deltas: dict[str, np.ndarray]) -> np.ndarray:
    """Quantize (``quantize``) and delta-encode path ``name``'s inputs ``v`` ``(B, T, N)`` (C-contiguous); count
    its work.

    Returns the references ``(T, B, N)`` in processing order, the input of
    the path's product in ``form`` (:func:`_form`): as its float type, or
    :func:`deltarnn.quant.kernels.gemm_vnni`'s bytes ``(T, B, 4G)``. ``dense`` bypasses delta encoding (the
    reference is the value itself; the per-step counts are its non-zero
    elements, the work every element).
    """
    bsz, steps, n = v.shape
    if form == "vnni":
        refs = np.full((steps, bsz, kernels.vnni_width(n)), kernels.VNNI_OFFSET, dtype=np.uint8)
    else:
        refs = np.empty((steps, bsz, n), dtype=np.float64 if form == "packed" else form)
    counts = np.empty((bsz, steps), dtype=np.int64)
    kernels.encode_sequence(v, quantize, int(act.mult), int(act.shift), int(act.bits), int(act.theta), dense,
                            reverse, refs, counts, float(kernels.VNNI_OFFSET if form == "vnni" else 0))
    elements = steps * bsz * n
    stats[name].add(elements, elements if dense else int(counts.sum()), m.rows)
    _per_step(step_deltas, name, counts)
    return refs


def _gemm():
    """The matrix product of the compiled loops: NumPy's BLAS where it can be called (:data:`kernels.NUMPY_GEMM`)."""
    return kernels.gemm_numpy if kernels.NUMPY_GEMM else kernels.gemm_dot


#: Time steps whose x-path products one BLAS call computes: enough rows for an efficient product,
#: few enough that they are still in cache when the steps read them.
X_CHUNK = 16


def _h_path(cell: str, d: QDirection, act: QActivation, refs: np.ndarray, w_x: np.ndarray, pack_x: bool, rq_x: tuple,
            vec: dict, dense: bool, out: np.ndarray) -> np.ndarray:
    """The sequential part of one direction: x references ``(T, B, N)`` -> h into ``out`` ``(B, T, H)``
    (processing order); returns the deltas emitted ``(T, B)``.

    The x path's accumulators equal ``W_x @ ref_x``, its products are
    computed :data:`X_CHUNK` steps at a time; the h path's equal ``W_h @
    ref_h`` (integer sums telescope), so each step's product is that of the
    references. Both are exact in float32 or float64 BLAS (:func:`exact_float`), or packed, three
    accumulators in each float64 (:func:`_packs`; ``pack_x``: the x path's ``w_x``).
    The whole loop, products included, is one compiled call that releases the
    GIL (:func:`deltarnn.quant.kernels.recurrent_sequence`): the threads of
    :func:`emulate` run in parallel.
    """
    steps, bsz, _ = refs.shape
    form_h = _form(d.h, act, recurrent=True)
    w_h = _weights(d.h, form_h)
    emitted = np.empty((steps, bsz), dtype=np.int64)
    rq_h = kernels.requantization_exact(d.h, _bound(d.h, act))
    quant = (*_scaled(act.mult, act.shift, -C.FX_MIN, "h activation"), float(C.qmax(act.bits)), float(act.theta))
    consts = kernels.step_constants(cell, rq_x, rq_h, vec["bias"], vec.get("bias_hn", vec["bias"]), quant, dense,
                                    (pack_x, form_h == "packed"))
    kernels.recurrent_sequence(*consts, refs, w_x, w_h, X_CHUNK, _gemm(), out, emitted)
    return emitted


def _per_step(step_deltas: dict[str, np.ndarray], name: str, counts: np.ndarray) -> None:
    """Add per-step counts ``(B, T)`` (in time order) to ``step_deltas[name]``."""
    step_deltas[name] = step_deltas[name] + counts if name in step_deltas else counts.copy()


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


_BLAS: list[ThreadpoolController] = []


def _blas() -> ThreadpoolController:
    """The thread pools of the BLAS that NumPy (imported above, with its BLAS) runs on, found once:
    looking them up costs milliseconds, as much as a small emulation."""
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0]


def _workers(n: int) -> ThreadPoolExecutor:
    """``n`` threads that run parts of a batch beside the caller's, started once per process: starting threads
    at each call costs about a millisecond, a twentieth of an emulation of 32 sequences. (A forked child has
    none of its parent's threads: it starts its own.)"""
    return _process_workers(n, os.getpid())


@functools.lru_cache(maxsize=None)
def _process_workers(n: int, pid: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(n, thread_name_prefix="deltarnn-emulate")


def emulate(qm: QModel, x: np.ndarray, dense: bool = False, threads: int | None = None) -> EmulationResult:
    """Run the QModel on float inputs ``x`` ``(batch, time, input_size)``.

    ``dense=True`` bypasses delta encoding (every path recomputes its full
    product each step): the reference the delta emulation must equal when
    all thresholds are 0. The sequences of a batch are independent: they are
    split over ``threads`` threads (default :func:`default_threads`: the
    caller's and :func:`_workers`), each writing its sequences' integers into
    the result's arrays, equal to one thread's.
    """
    x = check_input(qm, x)
    need = qm.accumulator_bits()
    if need > min(C.ACC_BITS, _EXACT_BITS):
        raise EmulationError(f"model needs {need}-bit accumulators, beyond the exact range")
    threads = default_threads(len(x)) if threads is None else min(int(threads), len(x))
    if threads < 1:
        raise EmulationError(f"threads must be at least 1, got {threads}")
    result = _allocate(qm, x)
    with _blas().limit(limits=1, user_api="blas"):  # threads only slow the per-step products, which are small
        if threads == 1:
            counts = [_emulate(qm, x, result, slice(None), dense)]
        else:
            bounds = np.cumsum([0] + [len(part) for part in np.array_split(x, threads)])
            first, *rest = (slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]))
            others = [_workers(threads - 1).submit(_emulate, qm, x, result, part, dense) for part in rest]
            counts = [_emulate(qm, x, result, first, dense)] + [f.result() for f in others]
    return _join(qm, result, counts)


def _allocate(qm: QModel, x: np.ndarray) -> EmulationResult:
    """The result of :func:`emulate` on checked input ``x`` before any sequence runs: the quantized input, the
    layers' and the last stage's outputs, all to be filled in (``(batch, time, n)`` each), no counts yet."""
    bsz, steps, n = x.shape
    width = qm.directions * qm.hidden_size
    layers = [np.empty((bsz, steps, width), dtype=np.int64) for _ in qm.layers]
    out = layers[-1] if qm.head is None else np.empty((bsz, steps, qm.head.matrix.rows), dtype=np.int64)
    return EmulationResult(out, layers, None, np.empty((bsz, steps, n), dtype=np.int64))


def _join(qm: QModel, result: EmulationResult, counts: list[tuple[dict, dict]]) -> EmulationResult:
    """``result`` with the counts ``(paths, step_deltas)`` of the consecutive parts of its batch."""
    paths = path_stats(qm)
    for part, _ in counts:
        for name, p in part.items():
            paths[name].merge(p)
    result.stats = Stats.for_model(qm, paths)
    result.step_deltas = {name: np.concatenate([deltas[name] for _, deltas in counts], axis=0)
                          for name in counts[0][1]}
    return result


def _emulate(qm: QModel, x: np.ndarray, result: EmulationResult, part: slice, dense: bool) -> tuple[dict, dict]:
    """:func:`emulate` on one thread, for the sequences ``part`` of the checked input ``x``: writes their
    integers into ``result``'s arrays (:func:`_allocate`); returns their counts, ``(paths, step_deltas)``."""
    paths = path_stats(qm)
    step_deltas: dict[str, np.ndarray] = {}
    values = result.input_q[part]
    values[:] = quantize_path_input(x[part], qm.layers[0].x_act, float_input=True)
    hs = qm.hidden_size
    for i, layer in enumerate(qm.layers):
        into = result.layer_outputs_fx[i][part]
        for j, d in enumerate(layer.directions):
            _direction(qm, i, d, values, quantize=i > 0, reverse=j == 1, dense=dense, stats=paths,
                       step_deltas=step_deltas, into=into[:, :, j * hs:(j + 1) * hs])
        values = into
    if qm.head is None:
        return paths, step_deltas
    head = qm.head
    form = _form(head.matrix, head.act, recurrent=False)
    refs = _encode("head.x", head.matrix, values, head.act, True, dense, False, form, paths, step_deltas)
    steps, bsz, n = refs.shape
    prod = (refs.reshape(-1, n) @ _weights(head.matrix, form)).reshape(steps, bsz, head.matrix.rows)
    kernels.head_output(prod, kernels.requantization_exact(head.matrix, _bound(head.matrix, head.act)),
                        head.bias.astype(np.float64), result.outputs_fx[part])
    return paths, step_deltas
