"""Compiled element-wise steps of the golden model (numba), bit-exact with :mod:`deltarnn.spec.contract`.

The golden model's time loop does one matrix product per step (BLAS, exact
for these integers) and a few dozen element-wise integer operations:
requantization of both paths' products, the gate tables, the cell update in
fixed point, the quantization of the new hidden state and its delta
encoding. Here a whole direction is one compiled call
(:func:`recurrent_sequence`: the loop over time, its BLAS products called
from compiled code, each step :func:`recurrent_step`), or, for SRU, whose
recurrence has no matrix, one compiled call over the products of the whole
sequence (:func:`sru_sequence`); the delta encoding of a path's whole input
sequence is one call too (:func:`encode_sequence`). Every kernel releases the
GIL, so that :func:`deltarnn.quant.golden.emulate` runs parts of a batch in
threads that do not wait for each other.

The products call NumPy's own BLAS (:func:`gemm_numpy`: ``cblas_?gemm`` of
the OpenBLAS in NumPy's wheel, whose small products are faster than those of
the older OpenBLAS in scipy's), or, where that library is not found, numba's
``np.dot`` on scipy's BLAS (:func:`gemm_dot`). Either is exact: every partial
sum is an integer in the float's exact range, in any order of summation.

Exact integers in float64
-------------------------

The step kernels hold every integer in a float64 and compute with IEEE
multiplications, additions and ``floor`` (no ``fastmath``: the compiler may
not reorder or contract anything). An IEEE operation whose exact result is
representable returns it exactly, and every integer of magnitude below
``2**53`` is representable, so each operation equals the integer one while
its result stays below ``2**53``, which the bounds below guarantee. The
point is speed: AVX2 has 4-lane float64 multiplies, ``floor`` and min/max,
but no 64-bit integer multiply, arithmetic shift or conversion, so the
integer form of these rules does not vectorise and this one does.

- ``round_shift(v, s)`` for ``s > 0`` is ``floor(v * 2**-s + 1/2)``: with
  ``v`` an integer below ``2**52``, ``v * 2**-s`` is exact (a power of two
  scales), and so is the sum, whose significand is the integer
  ``v + 2**(s-1)`` (below ``2**53``, :func:`requantization_exact`); ``floor``
  is then the arithmetic shift of the contract. A requantization
  ``acc * mult`` folds the power of two into the multiplier: ``acc * (mult *
  2**-s)`` is the exact ``acc * mult`` scaled.
- Fixed-point values are 16-bit: a fixed-point product is below ``2**30``,
  sums of a few of them below ``2**18``.
- Saturation and clamps are min/max, the delta rule arithmetic
  (``ref += fired * (q - ref)``), not a branch.
- A table address is ``clamp(floor(x * 2**-shift) + N/2, 0, N-1)``: the
  contract's ``(x >> shift) + N/2`` clamped. The saturation of a
  pre-activation before its table is left out: both tables' address clamps
  lie inside the saturated range (checked below), so it changes no address.

The fallback for wider accumulators (a requantization whose ``acc * mult``
may reach ``2**53``): the requantization alone runs in int64, selected per
matrix (``use_float`` of :func:`requantization_exact`), every other rule is
unchanged.

``tests/quant/test_kernels.py`` checks the kernels against the contract's
NumPy functions on random and extreme values, both requantization forms, and
the golden model's tests against the literal Python-integer reference.
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from deltarnn.spec import contract as C

__all__ = ["CELL_CODE", "NUMPY_GEMM", "delta_encode", "encode_sequence", "gemm_dot", "gemm_numpy", "head_output",
           "load_scipy_blas", "recurrent_sequence", "recurrent_step", "requantization_exact", "requantize_rows",
           "sru_sequence", "step_constants"]

#: The ``cell`` argument of :func:`recurrent_step`.
CELL_CODE = {"lstm": 0, "gru": 1, "ligru": 2}

_FX_FRAC = C.FX_FRAC
_FX_ONE = C.FX_ONE
_FX_LO, _FX_HI = C.FX_MIN, C.FX_MAX
_LUT_N = 1 << C.LUT_ADDR_BITS
_SIG_SHIFT = C.LUT_SHIFT["sigmoid"]
_TANH_SHIFT = C.LUT_SHIFT["tanh"]
SIGMOID = C.SIGMOID_TABLE.astype(np.int64)
TANH = C.TANH_TABLE.astype(np.int64)

#: Both tables as float64, sigmoid at addresses ``[0, N)``, tanh at ``[N, 2N)``.
TABLES = np.concatenate([C.SIGMOID_TABLE, C.TANH_TABLE]).astype(np.float64)
_SIG_BASE, _TANH_BASE = 0, _LUT_N
#: A table's address clamps inside the saturated range: saturating its input first changes no address.
assert all((_FX_HI >> s) + _LUT_N // 2 >= _LUT_N - 1 and (_FX_LO >> s) + _LUT_N // 2 <= 0
           for s in (_SIG_SHIFT, _TANH_SHIFT))
_EXACT = 1 << 53
_LO, _HI = float(_FX_LO), float(_FX_HI)
_ONE = float(_FX_ONE)
_HALF_N, _TOP = float(_LUT_N // 2), float(_LUT_N - 1)
_SIG_SCALE, _TANH_SCALE = 2.0 ** -_SIG_SHIFT, 2.0 ** -_TANH_SHIFT
_FRAC_SCALE = 2.0 ** -_FX_FRAC


# --- matrix products from compiled code ------------------------------------------------


def _numpy_gemm() -> bool:
    """Make NumPy's own BLAS ``cblas_sgemm`` / ``cblas_dgemm`` callable from compiled code; whether it could.

    NumPy's wheels carry OpenBLAS with 64-bit integers (``scipy-openblas64``,
    symbols ``scipy_cblas_?gemm64_``), found through NumPy's extension module,
    whose dependency it is. The addresses are given to LLVM under names of our
    own, which compiled (and cached) code calls.
    """
    try:
        from numpy._core import _multiarray_umath
        lib = ctypes.CDLL(_multiarray_umath.__file__)
        addresses = {k: ctypes.cast(getattr(lib, f"scipy_cblas_{k}gemm64_"), ctypes.c_void_p).value for k in "sd"}
    except (ImportError, OSError, AttributeError):
        return False
    for k, address in addresses.items():
        llvm.add_symbol(f"deltarnn_cblas_{k}gemm64", address)
    return True


#: Whether the golden model's compiled loops call NumPy's BLAS (:func:`gemm_numpy`), else numba's ``np.dot``
#: on scipy's BLAS (:func:`gemm_dot`, slower on small products: older OpenBLAS builds).
NUMPY_GEMM = _numpy_gemm()


@intrinsic
def _cblas_gemm64(typingctx, a, b, out):
    """``out = a @ b`` by NumPy's ``cblas_?gemm`` (64-bit integers), row-major; C-contiguous 2-D arrays of one
    float type, shapes checked by the caller."""
    if not (all(isinstance(t, types.Array) and t.ndim == 2 and t.layout == "C" for t in (a, b, out))
            and a.dtype == b.dtype == out.dtype and a.dtype in (types.float32, types.float64)):
        return None
    kind = "s" if a.dtype == types.float32 else "d"

    def codegen(context, builder, sig, args):
        i32, i64, ptr = ir.IntType(32), ir.IntType(64), ir.IntType(8).as_pointer()
        ft = context.get_value_type(a.dtype)
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, ft, ptr, i64, ptr, i64, ft, ptr, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"deltarnn_cblas_{kind}gemm64")
        arrays = [context.make_array(t)(context, builder, v) for t, v in zip(sig.args, args)]
        (m, k), (_, n) = (cgutils.unpack_tuple(builder, x.shape) for x in arrays[:2])
        pa, pb, pc = (builder.bitcast(x.data, ptr) for x in arrays)
        row_major, no_trans = ir.Constant(i32, 101), ir.Constant(i32, 111)
        builder.call(fn, [row_major, no_trans, no_trans, m, n, k, ir.Constant(ft, 1.0), pa, k, pb, n,
                          ir.Constant(ft, 0.0), pc, n])
        return context.get_dummy_value()

    return types.void(a, b, out), codegen


@njit(cache=True, nogil=True)
def gemm_numpy(a, b, out):
    """``out[:] = a @ b`` (C-contiguous float32 or float64 2-D arrays) by NumPy's BLAS, from compiled code."""
    m, k = a.shape
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != b.shape[1]:
        raise ValueError("gemm: incompatible shapes")
    if m and out.shape[1]:
        if k:
            _cblas_gemm64(a, b, out)
        else:
            out[:] = 0


@njit(cache=True, nogil=True)
def gemm_dot(a, b, out):
    """``out[:] = a @ b`` by numba's ``np.dot`` (scipy's BLAS; scipy imported first, :func:`load_scipy_blas`)."""
    np.dot(a, b, out)


def load_scipy_blas() -> None:
    """Import scipy's BLAS, which :func:`gemm_dot` calls: before the golden model sets BLAS thread limits."""
    import scipy.linalg.cython_blas  # noqa: F401


if not NUMPY_GEMM:
    load_scipy_blas()


# --- int64 rules (the contract's, on scalars) ----------------------------------------


@njit(cache=True, inline="always")
def _round_shift(v, shift):
    if shift == 0:
        return v
    return (v + (np.int64(1) << (shift - 1))) >> shift


@njit(cache=True, inline="always")
def _sat(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


@njit(cache=True, inline="always")
def _fx(v):
    return _sat(v, _FX_LO, _FX_HI)


@njit(cache=True, inline="always")
def _requantize_fx(acc, mult, rounding, shift):
    return _fx((acc * mult + rounding) >> shift)


@njit(cache=True, nogil=True)
def requantize_rows(prod, mult, rounding, shift, out):
    """Accumulators to fixed point: ``out[n, r] = saturate((int(prod[n, r]) * mult[r] + rounding[r]) >> shift)``.

    ``prod`` ``(N, R)`` holds exact integers (a BLAS product in float32 or
    float64); ``rounding`` is ``2**(shift-1)`` per row (0 when ``shift`` is 0),
    the contract's round half up.
    """
    n_rows, rows = prod.shape
    for n in range(n_rows):
        p, o = prod[n], out[n]
        for j in range(rows):
            o[j] = _requantize_fx(np.int64(p[j]), mult[j], rounding[j], shift)


@njit(cache=True, nogil=True)
def delta_encode(q, theta, refs, fired):
    """The delta rule over whole sequences ``q`` ``(B, T, N)``: references start at 0,
    ``fired = |q - ref| > theta``, and a fired element's reference becomes ``q``.

    Writes the reference after each step into ``refs`` and the rule's outcome into ``fired``.
    """
    bsz, steps, n = q.shape
    for b in range(bsz):
        ref = np.zeros(n, dtype=q.dtype)
        for t in range(steps):
            qt, rt, ft = q[b, t], refs[b, t], fired[b, t]
            for k in range(n):
                f = abs(qt[k] - ref[k]) > theta
                ref[k] = qt[k] if f else ref[k]
                rt[k] = ref[k]
                ft[k] = f


@njit(cache=True, nogil=True)
def encode_sequence(v, quantize, mult, shift, bits, theta, dense, reverse, refs, counts):
    """One path's input sequence ``v`` ``(T, B, N)`` (any layout) to the references its product sees.

    ``quantize``: ``v`` is fixed point, quantized first by the contract's
    ``quantize_act(v, mult, shift, bits)``; otherwise ``v`` holds the
    quantized integers. The delta rule as :func:`delta_encode` (``dense``:
    the reference is the value itself). ``reverse`` reads the sequence from
    its end: processing step ``s`` is time ``T-1-s``.

    Writes ``refs[s, b]`` ``(T, B, N)`` (float, the product's input) at each
    processing step ``s``, and ``counts[b, t]`` ``(B, T)`` at the input's time
    ``t``: the deltas emitted (``dense``: the non-zero values).
    """
    steps, bsz, n = v.shape
    qm = (np.int64(1) << (bits - 1)) - 1
    rnd = (np.int64(1) << shift) >> 1
    ref = np.zeros(n, dtype=np.int64)
    for b in range(bsz):
        ref[:] = 0
        for s in range(steps):
            t = steps - 1 - s if reverse else s
            src, dst = v[t, b], refs[s, b]
            cnt = 0
            for k in range(n):
                q = np.int64(src[k])
                if quantize:
                    q = min(max((q * mult + rnd) >> shift, -qm), qm)
                if dense:
                    ref[k] = q
                    cnt += q != 0
                else:
                    d = q - ref[k]
                    f = np.int64(abs(d) > theta)
                    ref[k] += f * d
                    cnt += f
                dst[k] = ref[k]
            counts[b, t] = cnt


# --- float64 rules (exact integers, see the module's docstring) ----------------------------


def requantization_exact(m, bound: int) -> tuple:
    """The requantization of matrix ``m``'s accumulators for the kernels, whose magnitude is below ``bound``.

    ``(scaled, half, mult, rounding, shift, use_float)``: ``scaled = mult *
    2**-shift`` and ``half`` (1/2, 0 when ``shift`` is 0) for the float64 form,
    ``mult`` and ``rounding`` (``2**(shift-1)``, or 0) int64 and ``shift`` for the
    int64 form; ``use_float`` when ``bound * max(mult) + rounding < 2**53``,
    so that the float64 form is exact.
    """
    mult = np.asarray(m.mult, dtype=np.int64)
    shift = int(m.shift)
    rounding = (1 << (shift - 1)) if shift else 0
    use_float = int(bound) * int(mult.max(initial=0)) + rounding < _EXACT
    return (mult.astype(np.float64) * 2.0 ** -shift, 0.5 if shift else 0.0, mult,
            np.full(mult.shape, rounding, dtype=np.int64), shift, use_float)


@njit(cache=True, inline="always")
def _clamp(v, lo, hi):
    return min(max(v, lo), hi)


@njit(cache=True, inline="always")
def _mul(a, b):
    """The contract's ``fx_mul`` of two fixed-point values (``|a*b| <= 2**30``)."""
    return _clamp(np.floor(a * b * _FRAC_SCALE + 0.5), _LO, _HI)


@njit(cache=True, inline="always")
def _requantize(p, rq, out, n):
    """``out[:n] = requantize(p[:n])`` (exact products) to fixed point, by ``rq`` of :func:`requantization_exact`."""
    scaled, half, mult, rounding, shift, use_float = rq
    if use_float:
        for j in range(n):
            out[j] = _clamp(np.floor(np.float64(p[j]) * scaled[j] + half), _LO, _HI)
    else:
        for j in range(n):
            out[j] = np.float64(_requantize_fx(np.int64(p[j]), mult[j], rounding[j], shift))


@njit(cache=True, inline="always")
def _address(pre, scale, base, idx, lo, hi):
    """``idx[j]`` = the table address of ``pre[j]`` (+ ``base``), ``lo <= j < hi``."""
    for j in range(lo, hi):
        idx[j] = np.int32(_clamp(np.floor(pre[j] * scale) + _HALF_N, 0.0, _TOP) + base)


@njit(cache=True, inline="always")
def _lookup(idx, out, lo, hi):
    for j in range(lo, hi):
        out[j] = TABLES[np.uintp(idx[j])]  # unsigned: no negative-index wraparound to test


@njit(cache=True, inline="always")
def _lstm(hs, x, hh, bias, c, h, idx, g, tmp):
    gh = 4 * hs
    for j in range(gh):
        x[j] += hh[j] + bias[j]
    _address(x, _SIG_SCALE, _SIG_BASE, idx, 0, 2 * hs)
    _address(x, _TANH_SCALE, _TANH_BASE, idx, 2 * hs, 3 * hs)
    _address(x, _SIG_SCALE, _SIG_BASE, idx, 3 * hs, gh)
    _lookup(idx, g, 0, gh)
    for k in range(hs):
        c[k] = _clamp(_mul(g[hs + k], c[k]) + _mul(g[k], g[2 * hs + k]), _LO, _HI)
    _address(c, _TANH_SCALE, _TANH_BASE, idx, 0, hs)
    _lookup(idx, tmp, 0, hs)
    for k in range(hs):
        h[k] = _mul(g[3 * hs + k], tmp[k])


@njit(cache=True, inline="always")
def _gru(hs, x, hh, bias, bias_hn, h, idx, g, tmp):
    for j in range(2 * hs):
        x[j] += hh[j] + bias[j]
    _address(x, _SIG_SCALE, _SIG_BASE, idx, 0, 2 * hs)
    _lookup(idx, g, 0, 2 * hs)
    for k in range(hs):
        j = 2 * hs + k
        nx = _clamp(x[j] + bias[j], _LO, _HI)
        nh = _clamp(hh[j] + bias_hn[k], _LO, _HI)
        tmp[k] = nx + _mul(g[k], nh)
    _address(tmp, _TANH_SCALE, _TANH_BASE, idx, 0, hs)
    _lookup(idx, tmp, 0, hs)
    for k in range(hs):
        z = g[hs + k]
        h[k] = _clamp(_mul(_ONE - z, tmp[k]) + _mul(z, h[k]), _LO, _HI)


@njit(cache=True, inline="always")
def _ligru(hs, x, hh, bias, h, idx, g):
    for j in range(2 * hs):
        x[j] += hh[j] + bias[j]
    _address(x, _SIG_SCALE, _SIG_BASE, idx, hs, 2 * hs)
    _lookup(idx, g, hs, 2 * hs)
    for k in range(hs):
        a = _clamp(x[k], 0.0, _HI)
        z = g[hs + k]
        h[k] = _clamp(_mul(z, h[k]) + _mul(_ONE - z, a), _LO, _HI)


def step_constants(cell: str, rq_x: tuple, rq_h: tuple, bias: np.ndarray, bias_hn: np.ndarray, act: tuple,
                   dense: bool) -> tuple:
    """Everything :func:`recurrent_step` reads besides the step's data, packed into four arrays.

    (Dispatching a compiled call costs about a microsecond per argument that
    is a tuple; a step is called once per time step.) ``rq_x``, ``rq_h``:
    :func:`requantization_exact` of both paths; ``bias``, ``bias_hn``: the
    fixed-point vectors (``bias_hn``: GRU only, any array otherwise);
    ``act``: the h path's activation quantizer and delta threshold,
    ``(mult * 2**-shift, 1/2 or 0 when shift is 0, qmax, theta)``; ``dense``:
    without delta encoding.

    Returns ``(fvec, fscal, ivec, iscal)``: float64 ``(4, G*H)`` (both
    scaled multipliers, ``bias``, ``bias_hn`` padded), float64 ``(6,)`` (both
    halves, ``act``), int64 ``(4, G*H)`` (multipliers and rounding constants of
    both int64 forms), int64 ``(6,)`` (:data:`CELL_CODE`, ``dense``, both
    ``use_float``, both shifts).
    """
    gh = len(bias)
    fvec = np.zeros((4, gh), dtype=np.float64)
    fvec[0], fvec[1], fvec[2] = rq_x[0], rq_h[0], bias
    fvec[3, :len(bias_hn)] = bias_hn
    fscal = np.array([rq_x[1], rq_h[1], *act], dtype=np.float64)
    ivec = np.stack([rq_x[2], rq_x[3], rq_h[2], rq_h[3]]).astype(np.int64)
    iscal = np.array([CELL_CODE[cell], dense, rq_x[5], rq_h[5], rq_x[4], rq_h[4]], dtype=np.int64)
    return fvec, fscal, ivec, iscal


@njit(cache=True, inline="always")
def _unpack(fvec, fscal, ivec, iscal):
    """The constants of :func:`step_constants`, unpacked for :func:`_step`."""
    rq_x = (fvec[0], fscal[0], ivec[0], ivec[1], iscal[4], iscal[2] != 0)
    rq_h = (fvec[1], fscal[1], ivec[2], ivec[3], iscal[5], iscal[3] != 0)
    act = (fscal[2], fscal[3], fscal[4], fscal[5])
    return iscal[0], iscal[1] != 0, rq_x, rq_h, fvec[2], fvec[3], act


@njit(cache=True, inline="always")
def _step(cell, dense, rq_x, rq_h, bias, bias_hn, act, prod_x, prod_h, c, h, ref, out, counts, x, hh, g, idx, tmp):
    """:func:`recurrent_step` on unpacked constants, with its scratch rows ``x``, ``hh``, ``g``, ``idx``, ``tmp``."""
    a_scaled, a_half, qm, theta = act
    bsz, gh = prod_x.shape
    hs = h.shape[1]
    for b in range(bsz):
        _requantize(prod_x[b], rq_x, x, gh)
        _requantize(prod_h[b], rq_h, hh, gh)
        hb = h[b]
        if cell == 0:
            _lstm(hs, x, hh, bias, c[b], hb, idx, g, tmp)
        elif cell == 1:
            _gru(hs, x, hh, bias, bias_hn, hb, idx, g, tmp)
        else:
            _ligru(hs, x, hh, bias, hb, idx, g)
        ob, rb = out[b], ref[b]
        for k in range(hs):
            ob[k] = np.int64(hb[k])
        if dense:
            for k in range(hs):
                rb[k] = _clamp(np.floor(hb[k] * a_scaled + a_half), -qm, qm)
            counts[b] = hs
        else:
            n = 0
            for k in range(hs):
                q = _clamp(np.floor(hb[k] * a_scaled + a_half), -qm, qm)
                r = rb[k]
                f = abs(q - r) > theta
                rb[k] = r + f * (q - r)
                n += f  # an integer sum: a float one would not vectorise without reassociation
            counts[b] = n


@njit(cache=True, nogil=True)
def recurrent_step(fvec, fscal, ivec, iscal, prod_x, prod_h, c, h, ref, out, counts):
    """One time step of an LSTM / GRU / LiGRU direction, for every sequence of a batch.

    Per sequence: requantize both paths' products, the cell update (passes
    over whole rows, the table lookups apart), then quantize and
    delta-encode the new ``h`` into the next step's h-path product input.
    (The golden model runs whole sequences, :func:`recurrent_sequence`; this
    is its step alone.)

    Parameters
    ----------
    fvec, fscal, ivec, iscal : arrays
        The direction's constants, :func:`step_constants`.
    prod_x, prod_h : float ``(B, G*H)``
        This step's x-path product ``W_x @ ref_x`` and h-path product
        ``W_h @ ref_h`` (exact integers): the accumulators, which equal the
        products of the references.
    c : float64 ``(B, H)``
        The LSTM cell state, updated in place (any array otherwise).
    h : float64 ``(B, H)``
        The hidden state: the previous step's ``h``, replaced by the new one.
    ref : float ``(B, H)``
        The h path's delta references, updated in place: the next step's product input.
    out : int64 ``(B, H)``
        Out: the new ``h``.
    counts : int64 ``(B,)``
        Out: deltas emitted per sequence (``H`` each when ``dense``).
    """
    cell, dense, rq_x, rq_h, bias, bias_hn, act = _unpack(fvec, fscal, ivec, iscal)
    gh, hs = prod_x.shape[1], h.shape[1]
    _step(cell, dense, rq_x, rq_h, bias, bias_hn, act, prod_x, prod_h, c, h, ref, out, counts,
          np.empty(gh, dtype=np.float64), np.empty(gh, dtype=np.float64), np.empty(gh, dtype=np.float64),
          np.empty(gh, dtype=np.int32), np.empty(hs, dtype=np.float64))


@njit(cache=True, nogil=True)
def recurrent_sequence(fvec, fscal, ivec, iscal, refs, w_x, w_h, chunk, gemm, out, emitted):
    """A whole LSTM / GRU / LiGRU direction: x references ``(T, B, N)`` -> ``out`` int64 ``(T, B, H)``,
    in processing order, and the h path's deltas emitted at each step into ``emitted`` int64 ``(T, B)``.

    The products are BLAS calls from compiled code, ``gemm(a, b, out)``
    (:func:`gemm_numpy`, or :func:`gemm_dot`), with the GIL released throughout: the x path's
    ``refs @ w_x`` ``chunk`` steps at a time, the h path's ``ref_h @ w_h`` of
    the current references once per step (none at step 0: ``h_{-1} = 0``),
    each step then :func:`recurrent_step`. ``refs`` and ``w_x`` ``(N, G*H)``
    share a float type, and so do ``w_h`` ``(H, G*H)`` and the h references,
    types whose products of these integers are exact
    (:func:`deltarnn.quant.golden.exact_float`); every array C-contiguous.
    ``fvec, fscal, ivec, iscal``: :func:`step_constants`.
    """
    cell, dense, rq_x, rq_h, bias, bias_hn, act = _unpack(fvec, fscal, ivec, iscal)
    steps, bsz, n = refs.shape
    hs, gh = w_h.shape
    chunk = max(1, min(chunk, steps))
    prod_x = np.empty((chunk * bsz, gh), dtype=w_x.dtype)
    prod_h = np.zeros((bsz, gh), dtype=w_h.dtype)
    ref = np.zeros((bsz, hs), dtype=w_h.dtype)
    c = np.zeros((bsz, hs), dtype=np.float64)
    h = np.zeros((bsz, hs), dtype=np.float64)
    x, hh, g = np.empty(gh, dtype=np.float64), np.empty(gh, dtype=np.float64), np.empty(gh, dtype=np.float64)
    idx, tmp = np.empty(gh, dtype=np.int32), np.empty(hs, dtype=np.float64)
    for t0 in range(0, steps, chunk):
        t1 = min(t0 + chunk, steps)
        px = prod_x[:(t1 - t0) * bsz]
        gemm(refs[t0:t1].reshape((t1 - t0) * bsz, n), w_x, px)
        for t in range(t0, t1):
            if t:
                gemm(ref, w_h, prod_h)
            r0 = (t - t0) * bsz
            _step(cell, dense, rq_x, rq_h, bias, bias_hn, act, px[r0:r0 + bsz], prod_h, c, h, ref, out[t],
                  emitted[t], x, hh, g, idx, tmp)


@njit(cache=True, nogil=True)
def sru_sequence(prod_x, rq_x, refs, highway, vf, vr, bias, out):
    """A whole SRU direction: x products ``(T, B, R)`` -> ``out`` int64 ``(T, B, H)``, in processing order.

    ``prod_x`` holds the exact products ``W_x @ ref_x`` of every step,
    ``rq_x`` their requantization (:func:`requantization_exact`). The highway
    input is the projection block of the products (rows ``3H..4H``) when
    ``highway`` is ``(-1.0, 0.0)``; otherwise ``highway = (mult * 2**-shift, 1/2
    or 0)`` requantizes the x references ``refs`` ``(T, B, H)`` to fixed point.
    """
    steps, bsz, rows = prod_x.shape
    hs = out.shape[2]
    hw_scaled, hw_half = highway
    x = np.empty(rows, dtype=np.float64)
    c = np.empty(hs, dtype=np.float64)
    hw = np.empty(hs, dtype=np.float64)
    g = np.empty(2 * hs, dtype=np.float64)
    idx = np.empty(2 * hs, dtype=np.int32)
    for b in range(bsz):
        c[:] = 0.0
        for t in range(steps):
            _requantize(prod_x[t, b], rq_x, x, rows)
            for k in range(hs):
                g[k] = x[hs + k] + _mul(vf[k], c[k]) + bias[k]
                g[hs + k] = x[2 * hs + k] + _mul(vr[k], c[k]) + bias[hs + k]
            _address(g, _SIG_SCALE, _SIG_BASE, idx, 0, 2 * hs)
            _lookup(idx, g, 0, 2 * hs)
            if hw_scaled < 0:
                for k in range(hs):
                    hw[k] = x[3 * hs + k]
            else:
                rt = refs[t, b]
                for k in range(hs):
                    hw[k] = _clamp(np.floor(np.float64(rt[k]) * hw_scaled + hw_half), _LO, _HI)
            ob = out[t, b]
            for k in range(hs):
                f, r = g[k], g[hs + k]
                ck = _clamp(_mul(f, c[k]) + _mul(_ONE - f, x[k]), _LO, _HI)
                c[k] = ck
                ob[k] = np.int64(_clamp(_mul(r, ck) + _mul(_ONE - r, hw[k]), _LO, _HI))


@njit(cache=True, nogil=True)
def head_output(prod, rq, bias, out):
    """The head: products ``(T, B, C)`` in processing order -> ``out`` int64 ``(B, T, C)``,
    ``saturate(requantize(prod) + bias)``."""
    steps, bsz, n = prod.shape
    buf = np.empty(n, dtype=np.float64)
    for t in range(steps):
        for b in range(bsz):
            _requantize(prod[t, b], rq, buf, n)
            o = out[b, t]
            for k in range(n):
                o[k] = np.int64(_clamp(buf[k] + bias[k], _LO, _HI))
