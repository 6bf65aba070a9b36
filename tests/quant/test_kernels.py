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
    rqx = fx(bsz, g * hs).astype(np.int32)
    acc_h = rng.integers(-(1 << 40), 1 << 40, (bsz, g * hs)) if big else rng.integers(-(1 << 20), 1 << 20, (bsz, g * hs))
    mult_h = rng.integers(0, 1 << C.MULT_BITS, g * hs)
    shift_h = 30 if big else 18
    bias, bias_hn = fx(g * hs).astype(np.int64), fx(hs).astype(np.int64)
    h, c = fx(bsz, hs).astype(np.int32), fx(bsz, hs).astype(np.int32)
    a_mult, a_shift, a_bits, theta = int(rng.integers(1, 1 << 14)), 14, int(rng.integers(2, 17)), int(rng.integers(0, 4))
    ref = rng.integers(-C.qmax(a_bits), C.qmax(a_bits) + 1, (bsz, hs))

    want_h, want_c = _oracle(cell, rqx.astype(np.int64), acc_h, mult_h, shift_h, bias, bias_hn,
                             h.astype(np.int64), c.astype(np.int64))
    q = C.quantize_act(want_h, a_mult, a_shift, a_bits)
    d = q - ref
    fired = np.ones_like(d, dtype=bool) if dense else np.abs(d) > theta
    want_vin = q if dense else np.where(fired, d, 0)
    want_ref = ref if dense else np.where(fired, q, ref)

    vin = np.empty((bsz, hs), dtype=np.float64)
    out = np.empty((bsz, hs), dtype=np.int64)
    counts = np.empty(bsz, dtype=np.int64)
    round_h = np.full(g * hs, 1 << (shift_h - 1))
    K.recurrent_step(K.CELL_CODE[cell], rqx, acc_h, mult_h, round_h, shift_h, bias, bias_hn, h, c, a_mult, a_shift, a_bits,
                     theta, ref, dense, vin, out, counts, K.SIGMOID, K.TANH)
    np.testing.assert_array_equal(out, want_h)
    np.testing.assert_array_equal(h, want_h)
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
    K.sru_sequence(rqx, hw, vf, vr, bias, out, K.SIGMOID)
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
