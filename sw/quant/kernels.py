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
from numba.extending import intrinsic, overload

from deltarnn.spec import contract as C

__all__ = ["CELL_CODE", "NUMPY_GEMM", "PACK", "PACK_LIMIT", "delta_encode", "encode_sequence", "gemm_dot",
           "gemm_numpy", "head_output", "load_scipy_blas", "pack_columns", "recurrent_sequence", "recurrent_step",
           "requantization_exact", "requantize_rows", "sru_sequence", "step_constants"]

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


# --- integer products on AVX-512 VNNI -----------------------------------------------------

#: Whether this CPU has AVX-512 VNNI (``vpdpbusd``: 64 products of unsigned and signed bytes summed into 16
#: int32 per instruction): then the recurrent products of narrow paths are integer ones (:func:`gemm_vnni`),
#: about three times as fast as the packed float64 ones. Read at each emulation: a test may turn it off.
VNNI = all(llvm.get_host_cpu_features().get(f, False) for f in ("avx512f", "avx512bw", "avx512vnni"))
#: What an activation byte of :func:`gemm_vnni`'s left operand holds above its value: ``vpdpbusd`` takes
#: unsigned bytes, and ``q + 128`` is one for every ``|q| <= 127``.
VNNI_OFFSET = 128
#: Rows of the left operand and 16-lane int32 vectors of the result one block of :func:`gemm_vnni` keeps in
#: registers: 4 x 4 accumulators, 4 weight vectors, a broadcast.
_VNNI_MR, _VNNI_NV = 4, 4
#: Columns of a :func:`pack_vnni` matrix are padded to a multiple of this.
VNNI_COLUMNS = 16 * _VNNI_NV


def vnni_fits(fan_in: int, wbits: int, abits: int) -> bool:
    """Whether :func:`gemm_vnni` computes a matrix's products exactly: weights and activations of 8 bits or
    fewer, and every partial sum within int32 (``|a + 128| <= 255``; the start, ``-128 * sum(w)``)."""
    return wbits <= 8 and abits <= 8 and 383 * vnni_width(fan_in) * C.qmax(wbits) < 1 << 31


def vnni_width(fan_in: int) -> int:
    """The columns of :func:`gemm_vnni`'s left operand for ``fan_in`` inputs: a multiple of 4."""
    return 4 * -(-fan_in // 4)


def pack_vnni(w: np.ndarray) -> np.ndarray:
    """Integer weights ``w`` ``(K, R)`` (``|w| <= 127``) as the right operand of :func:`gemm_vnni`: int32
    ``(1 + ceil(K/4), R')``, ``R'`` = ``R`` padded to :data:`VNNI_COLUMNS`.

    Row 0 is where each accumulator starts, ``-128 * sum_k w[k, r]``: it takes
    back the :data:`VNNI_OFFSET` of the activations. Row ``1 + g`` holds in
    column ``r`` the four bytes ``w[4g..4g+3, r]`` (missing rows and columns are
    0).
    """
    k, rows = w.shape
    groups, width = vnni_width(k) // 4, -(-rows // VNNI_COLUMNS) * VNNI_COLUMNS
    quads = np.zeros((4 * groups, width), dtype=np.int8)
    quads[:k, :rows] = w
    body = np.ascontiguousarray(quads.reshape(groups, 4, width).transpose(0, 2, 1)).view(np.int32)
    start = np.zeros((1, width), dtype=np.int32)
    start[0, :rows] = -VNNI_OFFSET * np.asarray(w, dtype=np.int64).sum(axis=0)
    return np.concatenate([start, body.reshape(groups, width)])


@intrinsic
def _vnni_gemm(typingctx, a, b, out):
    """``out = (a - 128) @ w`` with ``b = pack_vnni(w)``: ``a`` uint8 ``(M, 4G)``, ``b`` int32 ``(G+1, R')``,
    ``out`` int32 ``(M, R')``, C-contiguous, shapes checked by the caller.

    Blocks of 4 rows x 64 columns (a last block of single rows), 16
    accumulators in registers over the G groups of four inputs: per group,
    four weight vectors are loaded and each row's four activation bytes
    broadcast, 16 ``vpdpbusd``.
    """
    if not (all(isinstance(t, types.Array) and t.ndim == 2 and t.layout == "C" for t in (a, b, out))
            and a.dtype == types.uint8 and b.dtype == out.dtype == types.int32):
        return None

    def codegen(context, builder, sig, args):
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        v16, v64 = ir.VectorType(i32, 16), ir.VectorType(i8, 64)
        dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16, v64, v64]),
                                                "llvm.x86.avx512.vpdpbusd.512")
        arr_a, arr_b, arr_o = (context.make_array(t)(context, builder, v) for t, v in zip(sig.args, args))
        rows = cgutils.unpack_tuple(builder, arr_a.shape)[0]
        groups = builder.sub(cgutils.unpack_tuple(builder, arr_b.shape)[0], ir.Constant(i64, 1))
        blocks = builder.udiv(cgutils.unpack_tuple(builder, arr_b.shape)[1], ir.Constant(i64, VNNI_COLUMNS))
        (stride_a, _), (stride_b, _), (stride_o, _) = (cgutils.unpack_tuple(builder, x.strides)
                                                      for x in (arr_a, arr_b, arr_o))
        base_a, base_b, base_o = (builder.ptrtoint(x.data, i64) for x in (arr_a, arr_b, arr_o))
        accs = [[cgutils.alloca_once(builder, v16) for _ in range(_VNNI_NV)] for _ in range(_VNNI_MR)]

        def const(v):
            return ir.Constant(i64, v)

        def vector_at(address):
            return builder.inttoptr(address, v16.as_pointer())

        def block(mrows, m0):
            with cgutils.for_range(builder, blocks) as nb:
                col = builder.mul(nb.index, const(4 * VNNI_COLUMNS))
                for j in range(_VNNI_NV):
                    start = builder.load(vector_at(builder.add(base_b, builder.add(col, const(64 * j)))), align=4)
                    for i in range(mrows):
                        builder.store(start, accs[i][j])
                with cgutils.for_range(builder, groups) as gl:
                    wrow = builder.add(base_b, builder.add(builder.mul(builder.add(gl.index, const(1)), stride_b), col))
                    ws = [builder.bitcast(builder.load(vector_at(builder.add(wrow, const(64 * j))), align=4), v64)
                          for j in range(_VNNI_NV)]
                    for i in range(mrows):
                        at = builder.add(base_a, builder.add(builder.mul(builder.add(m0, const(i)), stride_a),
                                                             builder.mul(gl.index, const(4))))
                        word = builder.load(builder.inttoptr(at, i32.as_pointer()), align=1)
                        one = builder.insert_element(ir.Constant(v16, ir.Undefined), word, ir.Constant(i32, 0))
                        broadcast = builder.bitcast(builder.shuffle_vector(
                            one, ir.Constant(v16, ir.Undefined), ir.Constant(v16, [0] * 16)), v64)
                        for j in range(_VNNI_NV):
                            builder.store(builder.call(dpbusd, [builder.load(accs[i][j]), broadcast, ws[j]]),
                                          accs[i][j])
                for i in range(mrows):
                    orow = builder.add(base_o, builder.add(builder.mul(builder.add(m0, const(i)), stride_o), col))
                    for j in range(_VNNI_NV):
                        builder.store(builder.load(accs[i][j]), vector_at(builder.add(orow, const(64 * j))), align=4)

        full = builder.udiv(rows, const(_VNNI_MR))
        with cgutils.for_range(builder, full) as mb:
            block(_VNNI_MR, builder.mul(mb.index, const(_VNNI_MR)))
        with cgutils.for_range(builder, builder.sub(rows, builder.mul(full, const(_VNNI_MR)))) as mr:
            block(1, builder.add(builder.mul(full, const(_VNNI_MR)), mr.index))
        return context.get_dummy_value()

    return types.void(a, b, out), codegen


@njit(cache=True, nogil=True)
def gemm_vnni(a, b, out):
    """``out[:] = (a - 128) @ w`` for ``b = pack_vnni(w)`` (:func:`pack_vnni`): uint8 activations plus
    :data:`VNNI_OFFSET` ``(M, 4G)``, int32 ``out`` ``(M, R')``, exact (:func:`vnni_fits`). Only where
    :data:`VNNI` holds: elsewhere the instruction does not exist."""
    m, k = a.shape
    if k != 4 * (b.shape[0] - 1) or out.shape[0] != m or out.shape[1] != b.shape[1] or b.shape[1] % VNNI_COLUMNS:
        raise ValueError("gemm_vnni: incompatible shapes")
    _vnni_gemm(a, b, out)


def _product_input(w, rows, cols):
    """Typed in compiled code only (:func:`_product_input_typed`)."""


def _input_offset(w):
    """Typed in compiled code only (:func:`_input_offset_typed`)."""


def _product(a, b, out, gemm):
    """Typed in compiled code only (:func:`_product_typed`)."""


@overload(_product_input)
def _product_input_typed(w, rows, cols):
    """The h path's product input for weights ``w`` (typed on their form): :func:`gemm_vnni`'s bytes, or the
    float type of the BLAS product."""
    if w.dtype == types.int32:
        return lambda w, rows, cols: np.full((rows, 4 * (w.shape[0] - 1)), VNNI_OFFSET, dtype=np.uint8)
    return lambda w, rows, cols: np.zeros((rows, cols), dtype=w.dtype)


@overload(_input_offset)
def _input_offset_typed(w):
    """What a product input holds above its value for weights ``w``: :data:`VNNI_OFFSET`, or 0."""
    if w.dtype == types.int32:
        return lambda w: float(VNNI_OFFSET)
    return lambda w: 0.0


@overload(_product)
def _product_typed(a, b, out, gemm):
    """``out = a @ b`` by :func:`gemm_vnni` for VNNI weights (int32), else by ``gemm``."""
    if b.dtype == types.int32:
        return lambda a, b, out, gemm: gemm_vnni(a, b, out)
    return lambda a, b, out, gemm: gemm(a, b, out)


# --- three accumulators in one float64 ---------------------------------------------------

#: Accumulators one float64 of a packed product holds (:func:`pack_columns`).
PACK = 3
_PACK_BITS = 18
#: A matrix's products may be packed when every accumulator's magnitude is below this bound.
PACK_LIMIT = 1 << (_PACK_BITS - 1)
_PACK_S, _PACK_S2 = 2.0 ** _PACK_BITS, 2.0 ** (2 * _PACK_BITS)
_PACK_INV_S, _PACK_INV_S2 = 2.0 ** -_PACK_BITS, 2.0 ** (-2 * _PACK_BITS)


def pack_columns(w: np.ndarray) -> np.ndarray:
    """Integer weights ``w`` ``(K, R)`` as float64 ``(K, P)``, ``P = ceil(R / 3)``: column ``m`` holds
    ``w[:, m] + w[:, P + m] * 2**18 + w[:, 2P + m] * 2**36`` (missing columns are 0).

    A product ``ref @ pack_columns(w)`` then holds three accumulators per
    element, ``a0 + a1 * 2**18 + a2 * 2**36`` with ``a_i = (ref @ w)[:, iP + m]``:
    a third of the columns, in float64, whose BLAS products cost half as much
    per column as float32 ones. It is exact and separable while every
    accumulator's magnitude, and so every partial sum's, stays below
    :data:`PACK_LIMIT` (``2**17``): each partial sum of the BLAS is then an
    integer of magnitude below ``2**53``, and :func:`_separate_row` recovers
    the three accumulators.
    """
    rows = w.shape[1]
    p = -(-rows // PACK)
    wt = w.T  # the matrix's own layout, rows contiguous, where w is the transpose of its weights
    packed = wt[:p].astype(np.float64)
    packed[:rows - p] += wt[p:2 * p] * _PACK_S
    packed[:max(rows - 2 * p, 0)] += wt[2 * p:] * _PACK_S2
    return np.ascontiguousarray(packed.T)


@njit(cache=True, inline="always")
def _separate_row(v, out):
    """The accumulators of a packed product row ``v`` ``(P,)`` into ``out[:3P]`` (:func:`pack_columns`).

    With ``v = a0 + a1 * S + a2 * S**2`` (``S = 2**18``, ``|a_i| < S/2``):
    ``|a0 + a1 * S| < S**2 / 2``, so ``v * S**-2`` rounds to ``a2`` (a power of
    two scales exactly; no ties); the rest ``a0 + a1 * S`` is an exact
    difference, and ``a1``, ``a0`` follow the same way.
    """
    p = len(v)
    out0, out1, out2 = out[:p], out[p:2 * p], out[2 * p:3 * p]  # views: see _address
    for m in range(p):
        x = np.float64(v[m])
        a2 = np.rint(x * _PACK_INV_S2)
        r = x - a2 * _PACK_S2
        a1 = np.rint(r * _PACK_INV_S)
        out0[m] = r - a1 * _PACK_S
        out1[m] = a1
        out2[m] = a2


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
def encode_sequence(v, quantize, mult, shift, bits, theta, dense, reverse, refs, counts, offset=0.0):
    """One path's input sequences ``v`` ``(B, T, N)`` (C-contiguous) to the references its product sees,
    time-major.

    ``quantize``: ``v`` is fixed point, quantized first by the contract's
    ``quantize_act(v, mult, shift, bits)``; otherwise ``v`` holds the
    quantized integers. The delta rule as :func:`delta_encode` (``dense``:
    the reference is the value itself). ``reverse`` reads the sequence from
    its end: processing step ``s`` is time ``T-1-s``.

    Writes ``refs[s, b]`` ``(T, B, N')`` (the product's input: float, or
    :func:`gemm_vnni`'s bytes, each ``offset`` above its value; columns from
    ``N`` on are left as they are) at each processing step ``s``, and ``counts[b, t]`` ``(B, T)`` at the input's time
    ``t``: the deltas emitted (``dense``: the non-zero values).

    Exact integers in float64, as the step kernels (the module's docstring):
    ``v`` holds integers of magnitude below ``2**31`` (converted through
    int32, four at a time) and, when quantized, ``|v| * mult + 2**(shift-1)``
    stays below ``2**53`` (fixed-point values and a multiplier of
    :data:`deltarnn.spec.contract.MULT_BITS` bits).
    """
    bsz, steps, n = v.shape
    qm = float((1 << (bits - 1)) - 1)
    scaled, half = mult * 2.0 ** -shift, 0.5 if shift else 0.0
    lim = float(theta)
    q = np.empty(n, dtype=np.float64)
    ref = np.empty(n, dtype=np.float64)
    for b in range(bsz):
        ref[:] = 0.0
        for s in range(steps):
            t = steps - 1 - s if reverse else s
            src, dst = v[b, t], refs[s, b]
            if quantize:
                for k in range(n):
                    q[k] = _clamp(np.floor(np.float64(np.int32(src[k])) * scaled + half), -qm, qm)
            else:
                for k in range(n):
                    q[k] = np.float64(np.int32(src[k]))
            cnt = 0
            if dense:
                for k in range(n):
                    ref[k] = q[k]
                    cnt += q[k] != 0
            else:
                for k in range(n):
                    d = q[k] - ref[k]
                    f = abs(d) > lim
                    ref[k] += f * d
                    cnt += f
            for k in range(n):
                dst[k] = ref[k] + offset
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
def _requantize_product(p, packed, rq, out, n, scratch):
    """``out[:n] = requantize(p)`` for a product row ``p``; a ``packed`` one (:func:`pack_columns`) is
    separated into ``scratch`` (``3 * len(p)`` at least) first."""
    if packed:
        _separate_row(p, scratch)
        _requantize(scratch, rq, out, n)
    else:
        _requantize(p, rq, out, n)


# The loops below index views from 0 (``g[hs:2 * hs][k]``, not ``g[hs + k]``): an index the compiler cannot
# prove non-negative keeps NumPy's negative-index wraparound, and a loop with it does not vectorise.


@njit(cache=True, inline="always")
def _address(pre, scale, base, idx):
    """``idx[j]`` = the table address of ``pre[j]`` (+ ``base``), for every ``j`` of ``idx``."""
    for j in range(len(idx)):
        idx[j] = np.int32(_clamp(np.floor(pre[j] * scale) + _HALF_N, 0.0, _TOP) + base)


@njit(cache=True, inline="always")
def _lookup(idx, out):
    """``out[j] = TABLES[idx[j]]`` for every ``j`` of ``idx``."""
    for j in range(len(idx)):
        out[j] = TABLES[np.uintp(idx[j])]  # unsigned: no negative-index wraparound to test


@njit(cache=True, inline="always")
def _lstm(hs, x, hh, bias, c, h, idx, g, tmp):
    gh = 4 * hs
    for j in range(gh):
        x[j] += hh[j] + bias[j]
    _address(x[:2 * hs], _SIG_SCALE, _SIG_BASE, idx[:2 * hs])
    _address(x[2 * hs:3 * hs], _TANH_SCALE, _TANH_BASE, idx[2 * hs:3 * hs])
    _address(x[3 * hs:gh], _SIG_SCALE, _SIG_BASE, idx[3 * hs:gh])
    _lookup(idx[:gh], g)
    gi, gf, gg, go = g[:hs], g[hs:2 * hs], g[2 * hs:3 * hs], g[3 * hs:gh]
    for k in range(hs):
        c[k] = _clamp(_mul(gf[k], c[k]) + _mul(gi[k], gg[k]), _LO, _HI)
    _address(c, _TANH_SCALE, _TANH_BASE, idx[:hs])
    _lookup(idx[:hs], tmp)
    for k in range(hs):
        h[k] = _mul(go[k], tmp[k])


@njit(cache=True, inline="always")
def _gru(hs, x, hh, bias, bias_hn, h, idx, g, tmp):
    for j in range(2 * hs):
        x[j] += hh[j] + bias[j]
    _address(x, _SIG_SCALE, _SIG_BASE, idx[:2 * hs])
    _lookup(idx[:2 * hs], g)
    gr, gz = g[:hs], g[hs:2 * hs]
    xn, hn, bn = x[2 * hs:3 * hs], hh[2 * hs:3 * hs], bias[2 * hs:3 * hs]
    for k in range(hs):
        nx = _clamp(xn[k] + bn[k], _LO, _HI)
        nh = _clamp(hn[k] + bias_hn[k], _LO, _HI)
        tmp[k] = nx + _mul(gr[k], nh)
    _address(tmp, _TANH_SCALE, _TANH_BASE, idx[:hs])
    _lookup(idx[:hs], tmp)
    for k in range(hs):
        z = gz[k]
        h[k] = _clamp(_mul(_ONE - z, tmp[k]) + _mul(z, h[k]), _LO, _HI)


@njit(cache=True, inline="always")
def _ligru(hs, x, hh, bias, h, idx, g):
    for j in range(2 * hs):
        x[j] += hh[j] + bias[j]
    gz = g[hs:2 * hs]
    _address(x[hs:2 * hs], _SIG_SCALE, _SIG_BASE, idx[hs:2 * hs])
    _lookup(idx[hs:2 * hs], gz)
    for k in range(hs):
        a = _clamp(x[k], 0.0, _HI)
        z = gz[k]
        h[k] = _clamp(_mul(z, h[k]) + _mul(_ONE - z, a), _LO, _HI)


def step_constants(cell: str, rq_x: tuple, rq_h: tuple, bias: np.ndarray, bias_hn: np.ndarray, act: tuple,
                   dense: bool, packed: tuple[bool, bool] = (False, False)) -> tuple:
    """Everything :func:`recurrent_step` reads besides the step's data, packed into four arrays.

    (Dispatching a compiled call costs about a microsecond per argument that
    is a tuple; a step is called once per time step.) ``rq_x``, ``rq_h``:
    :func:`requantization_exact` of both paths; ``bias``, ``bias_hn``: the
    fixed-point vectors (``bias_hn``: GRU only, any array otherwise);
    ``act``: the h path's activation quantizer and delta threshold,
    ``(mult * 2**-shift, 1/2 or 0 when shift is 0, qmax, theta)``; ``dense``:
    without delta encoding; ``packed``: whether the x path's and the h
    path's products are packed (:func:`pack_columns`).

    Returns ``(fvec, fscal, ivec, iscal)``: float64 ``(4, G*H)`` (both
    scaled multipliers, ``bias``, ``bias_hn`` padded), float64 ``(6,)`` (both
    halves, ``act``), int64 ``(4, G*H)`` (multipliers and rounding constants of
    both int64 forms), int64 ``(8,)`` (:data:`CELL_CODE`, ``dense``, both
    ``use_float``, both shifts, both ``packed``).
    """
    gh = len(bias)
    fvec = np.zeros((4, gh), dtype=np.float64)
    fvec[0], fvec[1], fvec[2] = rq_x[0], rq_h[0], bias
    fvec[3, :len(bias_hn)] = bias_hn
    fscal = np.array([rq_x[1], rq_h[1], *act], dtype=np.float64)
    ivec = np.stack([rq_x[2], rq_x[3], rq_h[2], rq_h[3]]).astype(np.int64)
    iscal = np.array([CELL_CODE[cell], dense, rq_x[5], rq_h[5], rq_x[4], rq_h[4], *packed], dtype=np.int64)
    return fvec, fscal, ivec, iscal


@njit(cache=True, inline="always")
def _scratch_length(gh):
    """The length of the gate row ``g`` of :func:`_step`, which also holds a packed product row separated."""
    return max(gh, PACK * -(-gh // PACK))


@njit(cache=True, inline="always")
def _unpack(fvec, fscal, ivec, iscal):
    """The constants of :func:`step_constants`, unpacked for :func:`_step`."""
    rq_x = (fvec[0], fscal[0], ivec[0], ivec[1], iscal[4], iscal[2] != 0)
    rq_h = (fvec[1], fscal[1], ivec[2], ivec[3], iscal[5], iscal[3] != 0)
    act = (fscal[2], fscal[3], fscal[4], fscal[5])
    return iscal[0], iscal[1] != 0, rq_x, rq_h, fvec[2], fvec[3], act, (iscal[6] != 0, iscal[7] != 0)


@njit(cache=True, inline="always")
def _step(cell, dense, rq_x, rq_h, bias, bias_hn, act, packed, prod_x, prod_h, c, h, ref, inp, offset, out, counts, x,
          hh, g, idx, tmp):
    """:func:`recurrent_step` on unpacked constants, with its scratch rows ``x``, ``hh``, ``g``, ``idx``, ``tmp``
    (``g``: :func:`_scratch_length`). The new references are written into ``ref`` (float64) and, plus
    ``offset``, into ``inp``: the next step's product input (:func:`_product_input`; may be ``ref`` itself)."""
    a_scaled, a_half, qm, theta = act
    bsz, gh, hs = prod_x.shape[0], len(bias), h.shape[1]
    for b in range(bsz):
        _requantize_product(prod_x[b], packed[0], rq_x, x, gh, g)
        _requantize_product(prod_h[b], packed[1], rq_h, hh, gh, g)
        hb = h[b]
        if cell == 0:
            _lstm(hs, x, hh, bias, c[b], hb, idx, g, tmp)
        elif cell == 1:
            _gru(hs, x, hh, bias, bias_hn, hb, idx, g, tmp)
        else:
            _ligru(hs, x, hh, bias, hb, idx, g)
        ob, rb, ib = out[b], ref[b], inp[b]
        for k in range(hs):
            ob[k] = np.int64(hb[k])
        if dense:
            for k in range(hs):
                rb[k] = _clamp(np.floor(hb[k] * a_scaled + a_half), -qm, qm)
                ib[k] = rb[k] + offset
            counts[b] = hs
        else:
            n = 0
            for k in range(hs):
                q = _clamp(np.floor(hb[k] * a_scaled + a_half), -qm, qm)
                r = rb[k]
                f = abs(q - r) > theta
                rb[k] = r + f * (q - r)
                ib[k] = rb[k] + offset
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
    prod_x, prod_h : float ``(B, G*H)``, or float64 ``(B, ceil(G*H/3))`` when packed
        This step's x-path product ``W_x @ ref_x`` and h-path product
        ``W_h @ ref_h`` (exact integers): the accumulators, which equal the
        products of the references; three per element when packed
        (:func:`pack_columns`, ``packed`` of :func:`step_constants`).
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
    cell, dense, rq_x, rq_h, bias, bias_hn, act, packed = _unpack(fvec, fscal, ivec, iscal)
    gh, hs = len(bias), h.shape[1]
    _step(cell, dense, rq_x, rq_h, bias, bias_hn, act, packed, prod_x, prod_h, c, h, ref, ref, 0.0, out, counts,
          np.empty(gh, dtype=np.float64), np.empty(gh, dtype=np.float64),
          np.empty(_scratch_length(gh), dtype=np.float64),
          np.empty(gh, dtype=np.int32), np.empty(hs, dtype=np.float64))


@njit(cache=True, nogil=True)
def recurrent_sequence(fvec, fscal, ivec, iscal, refs, w_x, w_h, chunk, gemm, out, emitted):
    """A whole LSTM / GRU / LiGRU direction: x references ``(T, B, N)`` -> ``out`` int64 ``(B, T, H)``
    (any layout), in processing order, and the h path's deltas emitted at each step into ``emitted`` int64
    ``(T, B)``.

    The products are BLAS calls from compiled code, ``gemm(a, b, out)``
    (:func:`gemm_numpy`, or :func:`gemm_dot`), with the GIL released throughout: the x path's
    ``refs @ w_x`` ``chunk`` steps at a time, the h path's ``ref_h @ w_h`` of
    the current references once per step (none at step 0: ``h_{-1} = 0``),
    each step then :func:`recurrent_step`. ``refs`` and ``w_x`` ``(N, G*H)``
    share a float type, and so do ``w_h`` ``(H, G*H)`` and the h references,
    types whose products of these integers are exact
    (:func:`deltarnn.quant.golden.exact_float`); a packed path's weights
    are float64 ``pack_columns(W.T)`` instead (:func:`pack_columns`). A
    path whose weights are int32 ``pack_vnni(W.T)`` (:func:`pack_vnni`) takes
    integer products instead of ``gemm``'s (:func:`gemm_vnni`; its references
    are uint8, :data:`VNNI_OFFSET` above their values; x references ``(T, B,
    4G)``). Every array C-contiguous but ``out``. ``fvec, fscal, ivec, iscal``: :func:`step_constants`.
    """
    cell, dense, rq_x, rq_h, bias, bias_hn, act, packed = _unpack(fvec, fscal, ivec, iscal)
    steps, bsz, n = refs.shape
    hs, gh = out.shape[2], len(bias)
    chunk = max(1, min(chunk, steps))
    prod_x = np.empty((chunk * bsz, w_x.shape[1]), dtype=w_x.dtype)
    prod_h = np.zeros((bsz, w_h.shape[1]), dtype=w_h.dtype)
    ref = np.zeros((bsz, hs), dtype=np.float64)
    inp, offset = _product_input(w_h, bsz, hs), _input_offset(w_h)
    c = np.zeros((bsz, hs), dtype=np.float64)
    h = np.zeros((bsz, hs), dtype=np.float64)
    x, hh = np.empty(gh, dtype=np.float64), np.empty(gh, dtype=np.float64)
    g = np.empty(_scratch_length(gh), dtype=np.float64)
    idx, tmp = np.empty(gh, dtype=np.int32), np.empty(hs, dtype=np.float64)
    for t0 in range(0, steps, chunk):
        t1 = min(t0 + chunk, steps)
        px = prod_x[:(t1 - t0) * bsz]
        _product(refs[t0:t1].reshape((t1 - t0) * bsz, n), w_x, px, gemm)
        for t in range(t0, t1):
            if t:
                _product(inp, w_h, prod_h, gemm)
            r0 = (t - t0) * bsz
            _step(cell, dense, rq_x, rq_h, bias, bias_hn, act, packed, px[r0:r0 + bsz], prod_h, c, h, ref, inp,
                  offset, out[:, t], emitted[t], x, hh, g, idx, tmp)


@njit(cache=True, nogil=True)
def sru_sequence(prod_x, rq_x, refs, highway, vf, vr, bias, out):
    """A whole SRU direction: x products ``(T, B, R)`` -> ``out`` int64 ``(B, T, H)`` (any layout), in
    processing order.

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
    # views of the blocks (see _address): the candidate x[:hs], both gates, the projection
    xf, xr, xp = x[hs:2 * hs], x[2 * hs:3 * hs], x[3 * hs:]
    gf, gr, bf, br = g[:hs], g[hs:], bias[:hs], bias[hs:]
    for b in range(bsz):
        c[:] = 0.0
        for t in range(steps):
            _requantize(prod_x[t, b], rq_x, x, rows)
            for k in range(hs):
                gf[k] = xf[k] + _mul(vf[k], c[k]) + bf[k]
                gr[k] = xr[k] + _mul(vr[k], c[k]) + br[k]
            _address(g, _SIG_SCALE, _SIG_BASE, idx)
            _lookup(idx, g)
            if hw_scaled < 0:
                for k in range(hs):
                    hw[k] = xp[k]
            else:
                rt = refs[t, b]
                for k in range(hs):
                    hw[k] = _clamp(np.floor(np.float64(rt[k]) * hw_scaled + hw_half), _LO, _HI)
            ob = out[b, t]
            for k in range(hs):
                f, r = gf[k], gr[k]
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
