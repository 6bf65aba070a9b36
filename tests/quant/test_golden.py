"""The golden model: delta vs dense, a literal reference, float tracking, statistics."""

import numpy as np
import pytest

from deltarnn.spec.cells import CELLS

from deltarnn.spec.contract import quantize_float_input
from deltarnn.quant import golden, kernels
from deltarnn.quant.golden import EmulationError, emulate
from deltarnn.quant.quantizer import quantize

from tests.helpers import float_outputs, random_input, random_model
from tests.quant import reference

SHAPES = [(1, False), (2, False), (1, True), (3, True)]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers,bidir", SHAPES)
def test_theta0_delta_equals_dense(cell, layers, bidir):
    m = random_model(cell, 7, 9, layers, bidir, classes=4, seed=layers)
    x = random_input(5, 40, 7, seed=1)
    for wbits, abits in ((4, 8), (2, 4), (8, 6)):
        qm = quantize(m, x, wbits, abits)
        delta, dense = emulate(qm, x), emulate(qm, x, dense=True)
        np.testing.assert_array_equal(delta.outputs_fx, dense.outputs_fx)
        for a, b in zip(delta.layer_outputs_fx, dense.layer_outputs_fx):
            np.testing.assert_array_equal(a, b)
        assert delta.stats.macs_needed <= dense.stats.macs_needed


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)])
@pytest.mark.parametrize("theta", [0, 3])
def test_matches_literal_reference(cell, layers, bidir, theta):
    """Vectorised golden model == element-by-element Python-int reference, with deltas."""
    m = random_model(cell, 4, 5, layers, bidir, classes=3, seed=7)
    x = random_input(2, 12, 4, seed=2, scale=2.0)
    qm = quantize(m, x, 4, 6, skip=["0.x"])
    qm.set_thresholds(theta, theta)
    golden = emulate(qm, x)
    xq = quantize_float_input(x, qm.layers[0].x_act.scale, qm.layers[0].x_act.bits).tolist()
    ref = np.array(reference.run(qm, xq), dtype=np.int64)
    np.testing.assert_array_equal(golden.outputs_fx, ref)


def _reference(qm, x):
    xq = quantize_float_input(x, qm.layers[0].x_act.scale, qm.layers[0].x_act.bits).tolist()
    return np.array(reference.run(qm, xq), dtype=np.int64)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers,bidir", [(2, False), (1, True)])
@pytest.mark.parametrize("chunk", [1, 5])
@pytest.mark.parametrize("theta", [0, 2])
def test_chunked_x_products_match_literal_reference(cell, layers, bidir, chunk, theta, monkeypatch):
    """x-path products over a few steps at a time (a last, shorter chunk too) == the literal reference."""
    monkeypatch.setattr(golden, "X_CHUNK", chunk)
    m = random_model(cell, 3, 6, layers, bidir, classes=2, seed=5)
    x = random_input(3, 12, 3, seed=6, scale=2.0)
    qm = quantize(m, x, 4, 8)
    qm.set_thresholds(theta, theta + 1)
    np.testing.assert_array_equal(emulate(qm, x, threads=1).outputs_fx, _reference(qm, x))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers,bidir", [(2, False), (1, True)])
@pytest.mark.parametrize("theta", [0, 2])
@pytest.mark.parametrize("products", ["numpy-f32", "dot-f32", "numpy-f64", "dot-f64", "vnni-int"])
def test_compiled_loop_products_match_literal_reference(cell, layers, bidir, theta, products, monkeypatch):
    """The compiled time loops with either matrix product (NumPy's BLAS, numba's ``np.dot`` on scipy's) in
    float32 or float64, or integer products on AVX-512 VNNI, == the literal reference."""
    gemm, ft = products.split("-")
    if gemm == "numpy" and not kernels.NUMPY_GEMM:
        pytest.skip("NumPy's BLAS is not callable from compiled code here")
    if gemm == "vnni" and not kernels.VNNI:
        pytest.skip("this CPU has no AVX-512 VNNI")
    if gemm != "vnni":
        monkeypatch.setattr(kernels, "VNNI", False)
    if gemm == "dot":
        kernels.load_scipy_blas()
        monkeypatch.setattr(kernels, "NUMPY_GEMM", False)
    if ft == "f64":
        monkeypatch.setattr(golden, "_EXACT_BITS_F32", 0)  # no product qualifies for float32
    m = random_model(cell, 4, 7, layers, bidir, classes=3, seed=13)
    x = random_input(3, 14, 4, seed=8, scale=2.0)
    qm = quantize(m, x, 4, 8)
    qm.set_thresholds(theta, theta + 1)
    assert golden.exact_float(7, 4, 127) == (np.float64 if ft == "f64" else np.float32)
    if cell != "sru":  # the SRU's products are NumPy's
        layer = qm.layers[-1]
        assert (golden._form(layer.directions[0].h, layer.h_act, recurrent=True) == "vnni") == (gemm == "vnni")
    np.testing.assert_array_equal(emulate(qm, x).outputs_fx, _reference(qm, x))


@pytest.mark.parametrize("cell", CELLS)
def test_int64_requantization_matches_literal_reference(cell, monkeypatch):
    """Accumulators too wide for the float64 form of requantization take its int64 form: the same integers."""
    m = random_model(cell, 4, 5, 2, True, classes=3, seed=9)
    x = random_input(2, 12, 4, seed=3, scale=2.0)
    qm = quantize(m, x, 6, 8)
    qm.set_thresholds(1, 2)
    float_form = emulate(qm, x)
    monkeypatch.setattr(kernels, "_EXACT", 0)  # no matrix qualifies for the float64 form
    assert not kernels.requantization_exact(qm.layers[0].directions[0].x, 1)[-1]
    int_form = emulate(qm, x)
    np.testing.assert_array_equal(int_form.outputs_fx, _reference(qm, x))
    np.testing.assert_array_equal(int_form.outputs_fx, float_form.outputs_fx)


def test_sru_projection_and_identity_highway():
    for n_in in (5, 6):  # 5 != hidden: projection; 6 == hidden: identity highway
        m = random_model("sru", n_in, 6, 2, False, classes=0, seed=3)
        x = random_input(2, 10, n_in, seed=4)
        qm = quantize(m, x, 4, 8)
        assert (qm.layers[0].directions[0].highway is None) == (n_in != 6)
        assert qm.layers[1].directions[0].highway is not None
        xq = quantize_float_input(x, qm.layers[0].x_act.scale, 8).tolist()
        np.testing.assert_array_equal(emulate(qm, x).outputs_fx, np.array(reference.run(qm, xq)))


# Measured: the largest deviation over these cases is 0.0040 (GRU); the bound leaves room.
FLOAT_BOUND = 0.02


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers,bidir", SHAPES)
def test_16bit_tracks_float(cell, layers, bidir):
    m = random_model(cell, 8, 16, layers, bidir, classes=5, seed=11)
    x = random_input(4, 60, 8, seed=5)
    qm = quantize(m, x, 16, 16)
    err = np.abs(emulate(qm, x).outputs - float_outputs(m, x)).max()
    assert err < FLOAT_BOUND, f"{cell}: max |golden - float| = {err}"


@pytest.mark.parametrize("cell", CELLS)
def test_nothing_eliminated_when_everything_changes(cell):
    """Inputs that change every element every step at 16 bits: the x path skips no work."""
    m = random_model(cell, 6, 8, 1, False, classes=0, seed=2)
    steps = 30
    x = np.cumsum(np.ones((3, steps, 6), dtype=np.float32), axis=1) * 0.05 * np.linspace(1, 2, 6, dtype=np.float32)
    qm = quantize(m, x, 16, 16)
    stats = emulate(qm, x).stats
    p = stats.paths["0.x"]
    assert p.deltas == p.elements
    assert p.eliminated_pct == 0.0
    if all(s.deltas == s.elements for s in stats.paths.values()):
        assert stats.eliminated_pct == 0.0


@pytest.mark.parametrize("cell", CELLS)
def test_eliminated_grows_with_theta(cell):
    m = random_model(cell, 6, 16, 2, False, classes=4, seed=8)
    x = np.repeat(random_input(3, 25, 6, seed=9), 4, axis=1)  # held inputs, like speech frames
    qm = quantize(m, x, 4, 8)
    shares = []
    for theta in (0, 2, 8, 32):
        qm.set_thresholds(theta, theta)
        shares.append(emulate(qm, x).stats.eliminated_pct)
    assert shares[0] > 0  # integer quantization alone repeats values
    assert all(a < b for a, b in zip(shares, shares[1:])), shares


@pytest.mark.parametrize("cell", CELLS)
def test_4bit_compression_over_85_pct_at_128_units(cell):
    m = random_model(cell, 40, 128, 1, False, classes=0, seed=0)
    x = random_input(2, 5, 40)
    stats = emulate(quantize(m, x, 4, 8), x).stats
    assert stats.compression_pct > 85.0, stats.compression_pct


@pytest.mark.parametrize("cell", CELLS)
def test_threads_change_no_integer(cell):
    """A batch split over threads gives one thread's outputs, counts and per-step deltas, in order."""
    m = random_model(cell, 6, 8, 2, cell == "gru", classes=3, seed=3)
    x = random_input(7, 30, 6, seed=4, scale=2.0)
    qm = quantize(m, x, 4, 8)
    qm.set_thresholds(2, 3)
    one = emulate(qm, x, threads=1)
    for threads in (2, 3, 7, 50):
        r = emulate(qm, x, threads=threads)
        np.testing.assert_array_equal(r.outputs_fx, one.outputs_fx)
        np.testing.assert_array_equal(r.input_q, one.input_q)
        for a, b in zip(r.layer_outputs_fx, one.layer_outputs_fx):
            np.testing.assert_array_equal(a, b)
        assert r.stats.as_dict() == one.stats.as_dict()
        assert r.step_deltas.keys() == one.step_deltas.keys()
        for name in one.step_deltas:
            np.testing.assert_array_equal(r.step_deltas[name], one.step_deltas[name])
    with pytest.raises(EmulationError, match="threads must be at least 1"):
        emulate(qm, x, threads=0)


def _emulate_in_child(qm, x):
    return emulate(qm, x, threads=3).outputs_fx


def test_threads_in_a_forked_child():
    """A child forked after the parent's threads started runs its own (:func:`golden._workers`), not the
    parent's, which it does not have: same integers, no wait."""
    import multiprocessing

    m = random_model("gru", 4, 6, 1, False, classes=3, seed=2)
    x = random_input(5, 9, 4, seed=1)
    qm = quantize(m, x, 4, 8)
    want = emulate(qm, x, threads=3).outputs_fx  # the parent's worker threads exist now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        np.testing.assert_array_equal(pool.apply_async(_emulate_in_child, (qm, x)).get(timeout=120), want)


def test_bad_inputs_are_refused_clearly():
    m = random_model("gru", 5, 6)
    qm = quantize(m, random_input(2, 5, 5), 4, 8)
    with pytest.raises(EmulationError, match=r"expected \(batch, time, 5\)"):
        emulate(qm, np.zeros((2, 5, 4), np.float32))
    with pytest.raises(EmulationError, match="add a batch axis"):
        emulate(qm, np.zeros((5, 5), np.float32))
    with pytest.raises(EmulationError, match="NaN"):
        emulate(qm, np.full((1, 3, 5), np.nan, np.float32))
