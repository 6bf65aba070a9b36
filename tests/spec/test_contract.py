"""Hand-computed vectors for every rounding and saturation rule of docs/datapath.md."""

import numpy as np
import pytest

from deltarnn.spec import contract as C
from deltarnn.quant.golden import emulate
from deltarnn.quant.qmodel import QModel
from deltarnn.quant.quantizer import quantize

from tests.quant import reference
from tests.helpers import random_input, random_model


def test_constants():
    assert (C.FX_BITS, C.FX_FRAC, C.FX_ONE, C.FX_MAX, C.FX_MIN) == (16, 10, 1024, 32767, -32768)
    assert C.qmax(2) == 1 and C.qmax(4) == 7 and C.qmax(8) == 127 and C.qmax(16) == 32767
    assert C.SHIFT_MAX + C.MULT_BITS <= 62


@pytest.mark.parametrize("v,s,out", [
    (3, 1, 2), (-3, 1, -1), (1, 1, 1), (-1, 1, 0),      # +-1.5 -> 2, -1 ; +-0.5 -> 1, 0: half up
    (5, 2, 1), (6, 2, 2), (7, 2, 2), (-5, 2, -1), (-6, 2, -1), (-7, 2, -2),
    (1023, 10, 1), (511, 10, 0), (512, 10, 1), (-512, 10, 0), (-513, 10, -1),
    (12345, 0, 12345), (-12345, 0, -12345),
])
def test_round_shift_half_up(v, s, out):
    assert C.round_shift(v, s) == out
    assert C.round_shift(np.array([v]), s)[0] == out
    assert reference.rsh(v, s) == out


def test_saturate_and_symmetric_clamp():
    assert C.saturate(32768, 16) == 32767 and C.saturate(-32769, 16) == -32768
    assert C.saturate(-32768, 16) == -32768 and C.saturate(5, 16) == 5
    np.testing.assert_array_equal(C.saturate(np.array([-200, -128, 127, 200]), 8), [-128, -128, 127, 127])
    # activations are symmetric: -128 is never produced at 8 bits
    np.testing.assert_array_equal(C.clamp_symmetric(np.array([-200, -128, 127, 200]), 8), [-127, -127, 127, 127])
    assert C.clamp_symmetric(-2, 2) == -1 and C.clamp_symmetric(2, 2) == 1


def test_fx_mul_and_add_extremes():
    assert C.fx_mul(1024, 777) == 777 and C.fx_mul(-1024, 777) == -777
    assert C.fx_mul(512, 3) == 2                         # 1.5 -> 2
    assert C.fx_mul(512, -3) == -1                       # -1.5 -> -1
    assert C.fx_mul(32767, 32767) == 32767               # 1048512.0 saturates
    assert C.fx_mul(-32768, -32768) == 32767             # 1048576 saturates
    assert C.fx_mul(-32768, 32767) == -32768             # -1048544 saturates
    assert C.fx_mul(32767, 1) == 32                      # 31.999 -> 32
    assert C.fx_add(32767, 1) == 32767 and C.fx_add(-32768, -1) == -32768
    assert C.fx_add(32767, 32767, 32767) == 32767 and C.fx_add(20000, 20000, -30000) == 10000
    a = np.array([32767, -32768, 100], dtype=np.int64)
    np.testing.assert_array_equal(C.fx_mul(a, a), [32767, 32767, 10])


def test_requantize_extremes_do_not_wrap():
    big = (1 << (C.ACC_BITS - 1)) - 1
    m = (1 << C.MULT_BITS) - 1
    acc = np.array([big, -big, 0, 1000], dtype=np.int64)
    out = C.requantize(acc, m, 20)
    np.testing.assert_array_equal(out, [32767, -32768, 0, C.saturate(C.round_shift(1000 * m, 20), 16)])
    assert C.requantize(3, 1, 1) == 2 and C.requantize(-3, 1, 1) == -1
    assert C.requantize(acc, 0, 0).tolist() == [0, 0, 0, 0]


def test_quantize_act_and_float_input():
    # mult/shift = 0.5: 5 * 0.5 = 2.5 -> 3, -5 -> -2 (half up), then symmetric clamp
    np.testing.assert_array_equal(C.quantize_act(np.array([5, -5, 1000, -1000]), 1, 1, 8), [3, -2, 127, -127])
    x = np.array([0.5, -0.5, 1.5, -1.5, 0.49, 1e9, -1e9], dtype=np.float32)
    np.testing.assert_array_equal(C.quantize_float_input(x, 1.0, 4), [1, 0, 2, -1, 0, 7, -7])


def test_multiplier_precision_and_limits():
    mult, shift = C.multiplier(np.array([0.5, 0.25, 0.0]))
    assert mult.max() < 1 << C.MULT_BITS and mult[2] == 0
    np.testing.assert_allclose(mult / 2.0**shift, [0.5, 0.25, 0.0], rtol=2**-14)
    mult, shift = C.multiplier(np.array([1e-12]))
    assert shift == C.SHIFT_MAX
    with pytest.raises(ValueError, match="too large"):
        C.multiplier(np.array([1e6]))
    with pytest.raises(ValueError):
        C.multiplier(np.array([np.nan]))


def test_activation_tables():
    n = 1 << C.LUT_ADDR_BITS
    for kind, fn in (("sigmoid", lambda v: 1 / (1 + np.exp(-v))), ("tanh", np.tanh)):
        t = C.table(kind)
        assert t.shape == (n,) and np.all(np.diff(t) >= 0)
        # entry k covers inputs [(k - n/2) << shift, (k - n/2 + 1) << shift): midpoint sample
        k = 700
        mid = ((k - n // 2) * (1 << C.LUT_SHIFT[kind]) + (1 << C.LUT_SHIFT[kind]) / 2) / 1024
        assert t[k] == int(np.floor(fn(mid) * 1024 + 0.5))
        assert C.lut_index(32767, kind) == n - 1 and C.lut_index(-32768, kind) == 0
        assert C.lut_index(0, kind) == n // 2 and C.lut_index(-1, kind) == n // 2 - 1
    assert C.sigmoid(0) == 514 and C.sigmoid(-1) == 510 and C.sigmoid(32767) == 1024 and C.sigmoid(-32768) == 0
    assert C.tanh(0) == 4 and C.tanh(-1) == -4 and C.tanh(32767) == 1023 and C.tanh(-32768) == -1023  # tanh(3.996)
    assert C.SIGMOID_TABLE[0] == 0 and C.SIGMOID_TABLE[-1] == 1024


def test_accumulator_and_delta_widths():
    assert C.accumulator_bits(1, 2, 2) == 2              # |acc| <= 1
    assert C.accumulator_bits(100, 4, 8) == 18           # 100 * 7 * 127 = 88900 < 2**17
    assert C.accumulator_bits(1024, 16, 16) == 41
    assert C.delta_bits(8) == 9 and C.delta_bits(2) == 3 and C.delta_bits(16) == 17


def _extreme(qm: QModel) -> QModel:
    """Push every weight to +-qmax and every fixed-point vector to its limits."""
    rng = np.random.default_rng(0)
    for layer in qm.layers:
        for d in layer.directions:
            for m in (d.x, d.h):
                if m is not None:
                    m.weights = rng.choice([-1, 1], size=m.weights.shape) * C.qmax(m.wbits)
                    m.mult = np.full(m.rows, (1 << C.MULT_BITS) - 1)
            for k, v in d.vectors.items():
                d.vectors[k] = rng.choice([C.FX_MIN, C.FX_MAX], size=v.shape)
    if qm.head is not None:
        qm.head.matrix.weights = rng.choice([-1, 1], size=qm.head.matrix.weights.shape) * C.qmax(qm.head.matrix.wbits)
        qm.head.bias = rng.choice([C.FX_MIN, C.FX_MAX], size=qm.head.bias.shape)
    return qm


@pytest.mark.parametrize("cell", ["lstm", "gru", "ligru", "sru"])
def test_extremes_over_10000_steps_do_not_wrap(cell):
    """Largest-magnitude weights, saturating inputs, 10,000 steps: Python ints agree."""
    m = random_model(cell, 3, 3, 2, False, classes=2, seed=1)
    x = random_input(1, 10_000, 3, seed=3, scale=1e6)    # every input saturates
    skip = ["1.x"] + (["0.h"] if cell != "sru" else [])
    qm = _extreme(quantize(m, random_input(2, 10, 3), 8, 6, skip=skip))  # mixed widths
    golden = emulate(qm, x)
    xq = C.quantize_float_input(x, qm.layers[0].x_act.scale, qm.layers[0].x_act.bits).tolist()
    np.testing.assert_array_equal(golden.outputs_fx, np.array(reference.run(qm, xq)))
    assert golden.outputs_fx.min() >= C.FX_MIN and golden.outputs_fx.max() <= C.FX_MAX
    assert np.abs(golden.outputs_fx).max() == C.FX_MAX or np.abs(golden.outputs_fx).max() > 1000


def test_wide_fan_in_16_bit_accumulators():
    """16-bit weights and activations, fan-in 512: accumulators near 2**39 stay exact."""
    m = random_model("gru", 512, 4, 1, False, classes=0, seed=2)
    x = random_input(1, 50, 512, seed=1, scale=1e6)
    qm = _extreme(quantize(m, random_input(1, 4, 512), 16, 16))
    assert qm.accumulator_bits() == C.accumulator_bits(512, 16, 16) == 40
    xq = C.quantize_float_input(x, qm.layers[0].x_act.scale, 16).tolist()
    np.testing.assert_array_equal(emulate(qm, x).outputs_fx, np.array(reference.run(qm, xq)))
