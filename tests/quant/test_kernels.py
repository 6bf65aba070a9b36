"""The compiled element-wise steps against the contract's NumPy rules, on random and extreme values."""

from types import SimpleNamespace

import numpy as np
import pytest

from deltarnn.quant import kernels as K
from deltarnn.spec import contract as C

from tests.quant import cells


def _oracle(cell, rqx, rqh, bias, bias_hn, h, c):
    """The cell update of ``tests/quant/cells.py`` on the requantized accumulators."""
    vec = {"bias": bias, "bias_hn": bias_hn}
    new_h, new_c = cells.STEPS[cell](rqx, rqh, vec, (h, c))
    return new_h, (c if new_c is None else new_c)


def _matrix(mult, shift):
    return SimpleNamespace(mult=mult, shift=shift)


def _rq(mult, shift, bound, use_float):
    """:func:`K.requantization_exact`, with its float64 form or (``use_float=False``) its int64 form."""
    rq = K.requantization_exact(_matrix(mult, shift), bound)
    assert rq[-1] == (bound * int(mult.max()) + ((1 << shift) >> 1) < 1 << 53)
    return rq if use_float else rq[:-1] + (False,)


GATES = {"lstm": 4, "gru": 3, "ligru": 2}


@pytest.mark.parametrize("cell", ["lstm", "gru", "ligru"])
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_recurrent_step_equals_the_contract(cell, dense, seed):
    rng = np.random.default_rng(seed)
    bsz, hs, g = 5, 23, GATES[cell]
    big = seed >= 3   # saturating everything; seed 4: int64 requantization
    fx = (lambda *s: rng.integers(C.FX_MIN, C.FX_MAX + 1, s)) if big else (lambda *s: rng.integers(-3000, 3000, s))
    lim = 1 << (37 if big else 20)
    prod_x, prod_h = rng.integers(-lim, lim, (bsz, g * hs)), rng.integers(-lim, lim, (bsz, g * hs))
    mult_x, mult_h = rng.integers(0, 1 << C.MULT_BITS, (2, g * hs))
    shift_x, shift_h = (30, 31) if big else (18, 17)
    bias, bias_hn = fx(g * hs).astype(np.int64), fx(hs).astype(np.int64)
    h, c = fx(bsz, hs), fx(bsz, hs)
    a_mult, a_shift, a_bits, theta = int(rng.integers(1, 1 << 14)), 14, int(rng.integers(2, 17)), int(rng.integers(0, 4))
    ref = rng.integers(-C.qmax(a_bits), C.qmax(a_bits) + 1, (bsz, hs))

    want_h, want_c = _oracle(cell, C.requantize(prod_x, mult_x, shift_x), C.requantize(prod_h, mult_h, shift_h),
                             bias, bias_hn, h, c)
    q = C.quantize_act(want_h, a_mult, a_shift, a_bits)
    d = q - ref
    fired = np.ones_like(d, dtype=bool) if dense else np.abs(d) > theta
    want_ref = q if dense else np.where(fired, q, ref)

    use_float = seed != 4
    rq_x, rq_h = _rq(mult_x, shift_x, lim, use_float), _rq(mult_h, shift_h, lim, use_float)
    out = np.empty((bsz, hs), dtype=np.int64)
    counts = np.empty(bsz, dtype=np.int64)
    hf, cf, reff = h.astype(np.float64), c.astype(np.float64), ref.astype(np.float64)
    act = (a_mult * 2.0 ** -a_shift, 0.5, float(C.qmax(a_bits)), float(theta))
    consts = K.step_constants(cell, rq_x, rq_h, bias.astype(np.float64), bias_hn.astype(np.float64), act, dense)
    K.recurrent_step(*consts, prod_x.astype(np.float64), prod_h.astype(np.float64), cf, hf, reff, out, counts)
    np.testing.assert_array_equal(out, want_h)
    np.testing.assert_array_equal(hf, want_h)
    if cell == "lstm":
        np.testing.assert_array_equal(cf, want_c)
    np.testing.assert_array_equal(reff, want_ref)
    np.testing.assert_array_equal(counts, fired.sum(axis=1))


GEMMS = {"numpy": K.gemm_numpy, "dot": K.gemm_dot}


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", [(16, 128, 512), (1, 7, 5), (5, 1, 1), (3, 0, 4), (0, 3, 4), (4, 3, 0)])
def test_gemm_equals_matmul(gemm, dtype, m, k, n):
    if gemm == "numpy" and not K.NUMPY_GEMM:
        pytest.skip("NumPy's BLAS is not callable from compiled code here")
    K.load_scipy_blas()
    rng = np.random.default_rng(m + k + n)
    a, b = rng.integers(-127, 128, (m, k)).astype(dtype), rng.integers(-7, 8, (k, n)).astype(dtype)
    out = np.full((m, n), 5, dtype=dtype)
    GEMMS[gemm](a, b, out)
    np.testing.assert_array_equal(out, a @ b)
    with pytest.raises(ValueError):
        GEMMS[gemm](a, b, np.empty((m + 1, n), dtype=dtype))


needs_vnni = pytest.mark.skipif(not K.VNNI, reason="this CPU has no AVX-512 VNNI")


@needs_vnni
@pytest.mark.parametrize("m,k,n", [(16, 128, 512), (1, 7, 5), (5, 1, 1), (3, 0, 4), (0, 3, 4), (4, 3, 0), (7, 41, 129)])
def test_gemm_vnni_equals_matmul(m, k, n):
    rng = np.random.default_rng(m + k + n)
    a, w = rng.integers(-127, 128, (m, k)), rng.integers(-127, 128, (k, n))
    a[:, :2], w[:2, :] = 127, -127  # extremes
    b = K.pack_vnni(w)
    assert b.shape == (1 + -(-k // 4), -(-n // K.VNNI_COLUMNS) * K.VNNI_COLUMNS)
    a8 = np.full((m, K.vnni_width(k)), 200, dtype=np.uint8)  # padding: any byte, its weights are 0
    a8[:, :k] = a + K.VNNI_OFFSET
    out = np.full((m, b.shape[1]), 5, dtype=np.int32)
    K.gemm_vnni(a8, b, out)
    np.testing.assert_array_equal(out[:, :n], a @ w)
    with pytest.raises(ValueError):
        K.gemm_vnni(a8, b, np.empty((m + 1, b.shape[1]), dtype=np.int32))


@needs_vnni
def test_gemm_vnni_exact_up_to_its_bound():
    """The widest fan-in :func:`K.vnni_fits` admits for 8-bit weights and activations, every product at its
    largest magnitude, both signs: exact in int32."""
    k = 4 * max(g for g in range(1, 20000) if K.vnni_fits(4 * g, 8, 8))
    assert not K.vnni_fits(k + 4, 8, 8) and K.vnni_fits(k, 8, 8) and not K.vnni_fits(8, 9, 8)
    w = np.full((k, K.VNNI_COLUMNS), 127)
    w[:, 1::2] = -127
    a = np.array([[127] * k, [-127] * k])
    out = np.empty((2, K.VNNI_COLUMNS), dtype=np.int32)
    K.gemm_vnni((a + K.VNNI_OFFSET).astype(np.uint8), K.pack_vnni(w), out)
    np.testing.assert_array_equal(out, a @ w)


@pytest.mark.parametrize("cell", ["lstm", "gru", "ligru"])
@pytest.mark.parametrize("dense,theta", [(False, 0), (False, 2), (True, 0)])
@pytest.mark.parametrize("types_,gemm", [
    *((t, g) for t in [(np.float32, np.float32), (np.float64, np.float32), (np.float32, np.float64),
                       ("packed", "packed"), (np.float32, "packed"), ("packed", np.float64)] for g in GEMMS),
    # integer products with either path's other form (one BLAS: a compilation each, seconds)
    *(pytest.param(t, "numpy", marks=needs_vnni) for t in [("vnni", "vnni"), ("vnni", "packed"), (np.float32, "vnni")])])
@pytest.mark.parametrize("use_float", [True, False])
def test_recurrent_sequence_equals_the_steps(cell, dense, theta, types_, gemm, use_float):
    """The compiled sequence loop == NumPy products of the references and :func:`K.recurrent_step` per step,
    with chunks of x products (a last, shorter one), both requantization forms, products of either path
    packed (:func:`K.pack_columns`; rows not a multiple of 3 for LSTM and LiGRU) or integer ones
    (:func:`K.gemm_vnni`; rows and inputs not multiples of its blocks), into a strided output."""
    if gemm == "numpy" and not K.NUMPY_GEMM:
        pytest.skip("NumPy's BLAS is not callable from compiled code here")
    K.load_scipy_blas()
    fx, fh = types_
    rng = np.random.default_rng(GATES[cell] + 5 * theta + 11 * dense)
    steps, bsz, n, hs, g, chunk = 11, 3, 6, 10, GATES[cell], 4
    w_x, w_h = rng.integers(-7, 8, (n, g * hs)), rng.integers(-7, 8, (hs, g * hs))
    refs = rng.integers(-31, 32, (steps, bsz, n))
    mult_x, mult_h = rng.integers(1, 1 << C.MULT_BITS, (2, g * hs))
    bias, bias_hn = (rng.integers(-3000, 3000, k).astype(np.float64) for k in (g * hs, hs))
    bound = 1 << 12
    rq_x, rq_h = _rq(mult_x, 13, bound, use_float), _rq(mult_h, 12, bound, use_float)
    act = (5000 * 2.0 ** -14, 0.5, float(C.qmax(6)), float(theta))
    consts = K.step_constants(cell, rq_x, rq_h, bias, bias_hn, act, dense)

    want = np.empty((steps, bsz, hs), dtype=np.int64)
    want_emitted = np.empty((steps, bsz), dtype=np.int64)
    c, h, ref = np.zeros((bsz, hs)), np.zeros((bsz, hs)), np.zeros((bsz, hs))
    for t in range(steps):
        prod_x = (refs[t] @ w_x).astype(np.float64)
        prod_h = (ref @ w_h).astype(np.float64)
        K.recurrent_step(*consts, prod_x, prod_h, c, h, ref, want[t], want_emitted[t])
    assert len(np.unique(want)) > 20  # not all saturated
    assert dense or 0 < want_emitted.sum() < steps * bsz * hs

    packed = tuple(t == "packed" for t in types_)
    consts = K.step_constants(cell, rq_x, rq_h, bias, bias_hn, act, dense, packed)
    forms = {"packed": K.pack_columns, "vnni": K.pack_vnni}
    wx, wh = (forms[t](w) if t in forms else w.astype(t) for w, t in ((w_x, fx), (w_h, fh)))
    if fx == "vnni":
        refs = np.pad(refs + K.VNNI_OFFSET, ((0, 0), (0, 0), (0, K.vnni_width(n) - n)))
    layer = np.zeros((bsz, steps, 2 * hs), dtype=np.int64)  # the output: the second direction's half, reversed
    out = layer[:, ::-1, hs:]
    emitted = np.empty((steps, bsz), dtype=np.int64)
    K.recurrent_sequence(*consts, refs.astype(np.uint8 if fx == "vnni" else wx.dtype), wx, wh, chunk, GEMMS[gemm],
                         out, emitted)
    np.testing.assert_array_equal(out.transpose(1, 0, 2), want)
    assert not layer[:, :, :hs].any()
    np.testing.assert_array_equal(emitted, want_emitted)


@pytest.mark.parametrize("hs", [3, 4, 5])
def test_packed_products_separate_exactly(hs):
    """Three accumulators per float64 (:func:`K.pack_columns`; 12, 16, 20 rows: none, two, one missing), up to
    the largest magnitudes the packing admits (``PACK_LIMIT - 1``), are separated into the same integers: the
    cell update of packed products == that of the plain ones."""
    rng = np.random.default_rng(hs)
    bsz, gh, top = 6, 4 * hs, K.PACK_LIMIT - 1
    acc = rng.integers(-top, top + 1, (2, bsz, gh))
    acc[:, 0], acc[:, 1], acc[:, 2, ::2], acc[:, 2, 1::2] = top, -top, top, -top
    # products of unit references, by BLAS in float64: the packed accumulators of each sequence
    packed_prods = [np.eye(bsz) @ K.pack_columns(a) for a in acc]
    mult = rng.integers(1, 1 << C.MULT_BITS, (2, gh))
    rq_x, rq_h = (_rq(m, 20, top, True) for m in mult)
    act = (5000 * 2.0 ** -14, 0.5, float(C.qmax(8)), 0.0)
    bias = rng.integers(-3000, 3000, gh).astype(np.float64)
    results = []
    for packed, (px, ph) in (((False, False), acc.astype(np.float64)), ((True, True), packed_prods)):
        consts = K.step_constants("lstm", rq_x, rq_h, bias, bias, act, False, packed)
        c, h, ref = (np.zeros((bsz, hs)) for _ in range(3))
        out, counts = np.empty((bsz, hs), dtype=np.int64), np.empty(bsz, dtype=np.int64)
        K.recurrent_step(*consts, px, ph, c, h, ref, out, counts)
        results.append((out, c, ref, counts))
    assert packed_prods[0].shape == (bsz, -(-gh // 3)) and len(np.unique(results[0][1])) > 2 * bsz  # c: not saturated
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(4))
def test_sru_sequence_equals_the_contract(seed):
    rng = np.random.default_rng(seed)
    steps, bsz, hs = 9, 3, 11
    projection = seed % 2 == 0  # a fourth block of the products, or an identity highway from the references
    fx = (C.FX_MIN, C.FX_MAX + 1) if seed >= 2 else (-4000, 4000)
    lim = 1 << (36 if seed >= 2 else 20)
    rows = (4 if projection else 3) * hs
    prod = rng.integers(-lim, lim, (steps, bsz, rows))
    mult, shift = rng.integers(0, 1 << C.MULT_BITS, rows), 24
    refs = rng.integers(-127, 128, (steps, bsz, hs))
    hw_mult, hw_shift = int(rng.integers(1, 1 << C.MULT_BITS)), 9
    vf, vr, bias = (rng.integers(*fx, n).astype(np.int64) for n in (hs, hs, 2 * hs))
    out = np.empty((bsz, steps, hs), dtype=np.int64)
    highway = (-1.0, 0.0) if projection else (hw_mult * 2.0 ** -hw_shift, 0.5)
    K.sru_sequence(prod.astype(np.float64), _rq(mult, shift, lim, seed != 3), refs.astype(np.float32), highway,
                   vf.astype(np.float64), vr.astype(np.float64), bias.astype(np.float64), out)
    rqx = C.requantize(prod, mult, shift)
    h = c = np.zeros((bsz, hs), dtype=np.int64)
    vec = {"bias": bias, "vf": vf, "vr": vr}
    for t in range(steps):
        hw = None if projection else C.requantize(refs[t], hw_mult, hw_shift)
        h, c = cells.sru_step(rqx[t], hw, vec, (h, c))
        np.testing.assert_array_equal(out[:, t], h)


@pytest.mark.parametrize("shift", [0, 1, 13, 40])
@pytest.mark.parametrize("use_float", [True, False])
def test_head_output_equals_the_contract(shift, use_float):
    rng = np.random.default_rng(shift)
    lim = 1 << 22
    prod = rng.integers(-lim, lim, (6, 4, 19))
    mult = rng.integers(0, 1 << C.MULT_BITS, 19)
    bias = rng.integers(C.FX_MIN, C.FX_MAX + 1, 19)
    out = np.empty((4, 6, 19), dtype=np.int64)
    K.head_output(prod.astype(np.float32), _rq(mult, shift, lim, use_float), bias.astype(np.float64), out)
    np.testing.assert_array_equal(out, C.fx_add(C.requantize(prod, mult, shift), bias).transpose(1, 0, 2))


def test_requantization_exact_refuses_the_float_form_beyond_2_53():
    mult = np.array([3, (1 << C.MULT_BITS) - 1])
    assert K.requantization_exact(_matrix(mult, 20), 1 << 37)[-1]
    assert not K.requantization_exact(_matrix(mult, 20), 1 << 39)[-1]
    scaled, half, *_ = K.requantization_exact(_matrix(mult, 0), 1)
    assert half == 0.0 and list(scaled) == [3.0, float(mult[1])]


@pytest.mark.parametrize("shift", [0, 1, 13, 40])
def test_requantize_rows_equals_the_contract(shift):
    rng = np.random.default_rng(shift)
    acc = rng.integers(-(1 << 22), 1 << 22, (7, 19))
    mult = rng.integers(0, 1 << C.MULT_BITS, 19)
    rounding = np.full(19, (1 << (shift - 1)) if shift else 0)
    for prod in (acc.astype(np.float32), acc.astype(np.float64)):
        out = np.empty(acc.shape, dtype=np.int32)
        K.requantize_rows(prod, mult, rounding, shift, out)
        np.testing.assert_array_equal(out, C.requantize(acc, mult, shift))


def _delta_rule(q, theta):
    """References after each step and where deltas fired, ``q`` ``(B, T, N)``, NumPy."""
    ref = np.zeros((q.shape[0], q.shape[2]), dtype=q.dtype)
    refs, fired = np.empty_like(q), np.empty(q.shape, dtype=bool)
    for t in range(q.shape[1]):
        f = np.abs(q[:, t] - ref) > theta
        ref = np.where(f, q[:, t], ref)
        refs[:, t], fired[:, t] = ref, f
    return refs, fired


@pytest.mark.parametrize("theta", [0, 1, 5])
def test_delta_encode_equals_the_rule(theta):
    rng = np.random.default_rng(theta)
    q = rng.integers(-20, 21, (3, 17, 6))
    refs, fired = np.empty_like(q), np.empty(q.shape, dtype=bool)
    K.delta_encode(q, theta, refs, fired)
    want_refs, want_fired = _delta_rule(q, theta)
    np.testing.assert_array_equal(refs, want_refs)
    np.testing.assert_array_equal(fired, want_fired)


@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("theta,dense", [(0, False), (2, False), (0, True)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("vnni", [False, True])
def test_encode_sequence_equals_the_rule(quantize, theta, dense, reverse, vnni):
    """The references in float32, or as :func:`K.gemm_vnni`'s bytes (offset, padded columns left as they are)."""
    rng = np.random.default_rng(theta + 3 * quantize + 7 * reverse)
    bsz, steps, n = 3, 13, 7
    mult, shift, bits = 3001, 13, 6
    v = rng.integers(C.FX_MIN, C.FX_MAX + 1, (bsz, steps, n)) if quantize else rng.integers(-20, 21, (bsz, steps, n))
    q = C.quantize_act(v, mult, shift, bits) if quantize else v
    q_proc = q[:, ::-1] if reverse else q  # processing order
    if dense:
        want_refs, want_counts = q_proc, np.count_nonzero(q_proc, axis=-1)
    else:
        want_refs, fired = _delta_rule(q_proc, theta)
        want_counts = fired.sum(axis=-1)
    counts = np.empty((bsz, steps), dtype=np.int64)
    if vnni:
        refs = np.full((steps, bsz, K.vnni_width(n)), 7, dtype=np.uint8)
        K.encode_sequence(v, quantize, mult, shift, bits, theta, dense, reverse, refs, counts, float(K.VNNI_OFFSET))
        assert (refs[:, :, n:] == 7).all()
        refs = refs[:, :, :n].astype(np.int64) - K.VNNI_OFFSET
    else:
        refs = np.empty((steps, bsz, n), dtype=np.float32)
        K.encode_sequence(v, quantize, mult, shift, bits, theta, dense, reverse, refs, counts)
    np.testing.assert_array_equal(refs, want_refs.transpose(1, 0, 2))
    np.testing.assert_array_equal(counts, want_counts[:, ::-1] if reverse else want_counts)  # counts in time order
