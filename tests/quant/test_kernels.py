"""The compiled element-wise steps against the contract's NumPy rules, on random and extreme values."""

import numpy as np
import pytest

from deltarnn.quant import kernels as K
from deltarnn.spec import contract as C

from tests.quant import cells


def _oracle(cell, rqx, acc_h, mult_h, shift_h, bias, bias_hn, h, c):
    """The cell update of ``tests/quant/cells.py`` on the requantized accumulators."""
    vec = {"bias": bias, "bias_hn": bias_hn}
    new_h, new_c = cells.STEPS[cell](rqx, C.requantize(acc_h, mult_h, shift_h), vec, (h, c))
    return new_h, (c if new_c is None else new_c)


GATES = {"lstm": 4, "gru": 3, "ligru": 2}


@pytest.mark.parametrize("cell", ["lstm", "gru", "ligru"])
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_recurrent_step_equals_the_contract(cell, dense, seed):
    rng = np.random.default_rng(seed)
    bsz, hs, g = 5, 23, GATES[cell]
    big = seed == 3   # saturating everything
    fx = (lambda *s: rng.integers(C.FX_MIN, C.FX_MAX + 1, s)) if big else (lambda *s: rng.integers(-3000, 3000, s))
    lim = 1 << (40 if big else 20)
    prod_x, acc_h = rng.integers(-lim, lim, (bsz, g * hs)), rng.integers(-lim, lim, (bsz, g * hs))
    mult_x, mult_h = rng.integers(0, 1 << C.MULT_BITS, (2, g * hs))
    shift_x, shift_h = (30, 31) if big else (18, 17)
    bias, bias_hn = fx(g * hs).astype(np.int64), fx(hs).astype(np.int64)
    h, c = fx(bsz, hs), fx(bsz, hs)
    a_mult, a_shift, a_bits, theta = int(rng.integers(1, 1 << 14)), 14, int(rng.integers(2, 17)), int(rng.integers(0, 4))
    ref = rng.integers(-C.qmax(a_bits), C.qmax(a_bits) + 1, (bsz, hs))

    want_h, want_c = _oracle(cell, C.requantize(prod_x, mult_x, shift_x), acc_h, mult_h, shift_h, bias, bias_hn, h, c)
    q = C.quantize_act(want_h, a_mult, a_shift, a_bits)
    d = q - ref
    fired = np.ones_like(d, dtype=bool) if dense else np.abs(d) > theta
    want_vin = q if dense else np.where(fired, d, 0)
    want_ref = ref if dense else np.where(fired, q, ref)

    vin = np.empty((bsz, hs), dtype=np.float64)
    out = np.empty((bsz, hs), dtype=np.int64)
    counts = np.empty(bsz, dtype=np.int64)
    # the step adds its product to the accumulators (dense: replaces them)
    before = rng.integers(-(1 << 20), 1 << 20, acc_h.shape)
    acc = np.zeros_like(acc_h) if dense else before
    prod_h = (acc_h - (0 if dense else before)).astype(np.float64)
    rq_x = (mult_x, np.full(g * hs, 1 << (shift_x - 1)), shift_x)
    rq_h = (mult_h, np.full(g * hs, 1 << (shift_h - 1)), shift_h)
    K.recurrent_step(K.CELL_CODE[cell], prod_x.astype(np.float64), rq_x, prod_h, acc, rq_h, bias, bias_hn, c, h,
                     (a_mult, a_shift, a_bits, theta), dense, ref, vin, out, counts)
    np.testing.assert_array_equal(acc, acc_h)
    np.testing.assert_array_equal(out, want_h)
    if cell == "lstm":
        np.testing.assert_array_equal(c, want_c)
    np.testing.assert_array_equal(vin, want_vin)
    np.testing.assert_array_equal(ref, want_ref)
    np.testing.assert_array_equal(counts, fired.sum(axis=1))


@pytest.mark.parametrize("seed", range(3))
def test_sru_sequence_equals_the_contract(seed):
    rng = np.random.default_rng(seed)
    bsz, steps, hs = 3, 9, 11
    lim = (C.FX_MIN, C.FX_MAX + 1) if seed == 2 else (-4000, 4000)
    rqx = rng.integers(*lim, (bsz, steps, 3 * hs)).astype(np.int32)
    hw = rng.integers(*lim, (bsz, steps, hs)).astype(np.int32)
    vf, vr, bias = (rng.integers(*lim, n).astype(np.int64) for n in (hs, hs, 2 * hs))
    out = np.empty((bsz, steps, hs), dtype=np.int64)
    K.sru_sequence(rqx, hw, vf, vr, bias, out)
    h = c = np.zeros((bsz, hs), dtype=np.int64)
    vec = {"bias": bias, "vf": vf, "vr": vr}
    for t in range(steps):
        h, c = cells.sru_step(rqx[:, t].astype(np.int64), hw[:, t], vec, (h, c))
        np.testing.assert_array_equal(out[:, t], h)


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


@pytest.mark.parametrize("theta", [0, 1, 5])
def test_delta_encode_equals_the_rule(theta):
    rng = np.random.default_rng(theta)
    q = rng.integers(-20, 21, (3, 17, 6))
    refs, fired = np.empty_like(q), np.empty(q.shape, dtype=bool)
    K.delta_encode(q, theta, refs, fired)
    ref = np.zeros((3, 6), dtype=q.dtype)
    for t in range(q.shape[1]):
        f = np.abs(q[:, t] - ref) > theta
        ref = np.where(f, q[:, t], ref)
        np.testing.assert_array_equal(fired[:, t], f)
        np.testing.assert_array_equal(refs[:, t], ref)
