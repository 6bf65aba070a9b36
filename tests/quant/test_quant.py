"""Post-training quantization: widths, MMSE clipping, skipped paths, errors."""

import numpy as np
import pytest

from deltarnn.spec import contract as C
from deltarnn.quant.quantizer import QuantizationError, mmse_activation_scale, mmse_weight_scales, quantize

from tests.helpers import random_input, random_model


def test_widths_and_skipped_paths():
    m = random_model("gru", 5, 8, 2, False, classes=3)
    qm = quantize(m, random_input(3, 20, 5), wbits=3, abits=5, skip=["0.h", "head.x"])
    acts = qm.paths()
    assert acts["0.x"].bits == 5 and acts["0.h"].bits == 16 and acts["1.x"].bits == 5 and acts["head.x"].bits == 16
    d0 = qm.layers[0].directions[0]
    assert d0.x.wbits == 3 and d0.h.wbits == 16 and qm.head.matrix.wbits == 16
    assert np.abs(d0.x.weights).max() <= C.qmax(3)
    assert qm.meta["skip"] == ["0.h", "head.x"]


def test_weight_scales_reconstruct_rows():
    m = random_model("lstm", 6, 8)
    qm = quantize(m, random_input(2, 10, 6), wbits=16, abits=16)
    w = m.layers[0].weight_ih_l0.detach().double().numpy()
    d = qm.layers[0].directions[0].x
    np.testing.assert_allclose(d.weights * d.scale[:, None], w, atol=np.abs(w).max() / 32767)
    real = d.scale * qm.layers[0].x_act.scale * C.FX_ONE
    np.testing.assert_allclose(d.mult / 2.0**d.shift, real, rtol=2.0**-13)


def test_mmse_clipping_beats_max_clipping():
    rng = np.random.default_rng(0)
    v = rng.standard_t(df=3, size=50_000)          # heavy tails: clipping pays
    bits = 4
    s = mmse_activation_scale(v, bits)
    s_max = np.abs(v).max() / C.qmax(bits)
    err = lambda sc: np.mean((np.clip(np.floor(v / sc + 0.5), -7, 7) * sc - v) ** 2)
    assert s < s_max and err(s) < 0.5 * err(s_max)
    w = rng.standard_t(df=3, size=(8, 200))
    ws = mmse_weight_scales(w, 3)
    assert np.all(ws <= np.abs(w).max(axis=1) / 3 + 1e-12)


def test_fixed_point_inputs_never_get_a_finer_step():
    m = random_model("gru", 5, 8, 2, False, classes=0)
    qm = quantize(m, random_input(3, 20, 5), wbits=16, abits=16)
    assert qm.layers[1].x_act.scale == 1 / C.FX_ONE and qm.layers[0].h_act.scale == 1 / C.FX_ONE


def test_errors_name_the_problem():
    m = random_model("gru", 5, 8)
    x = random_input(2, 10, 5)
    with pytest.raises(QuantizationError, match="wbits must be between 2 and 16"):
        quantize(m, x, wbits=1)
    with pytest.raises(QuantizationError, match="abits must be between 2 and 16"):
        quantize(m, x, abits=17)
    with pytest.raises(QuantizationError, match=r"unknown path\(s\) to skip: 3.h.*0.x, 0.h, head.x"):
        quantize(m, x, skip=["3.h"])
    with pytest.raises(QuantizationError, match=r"must be \(batch, time, 5\)"):
        quantize(m, x[..., :4])


def test_accumulator_bound_is_checked(monkeypatch):
    m = random_model("gru", 64, 8)
    monkeypatch.setattr(C, "ACC_BITS", 24)
    # 64 * qmax(8) * qmax(16) = 266,330,176 < 2**28: 29 bits with the sign
    with pytest.raises(QuantizationError, match="needs 29-bit accumulators.*more than the 24 bits"):
        quantize(m, random_input(2, 5, 64), wbits=8, abits=16)
