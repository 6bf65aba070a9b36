"""Packing a QModel into a core's memories, the WRITE commands that load it, and the input deltas."""

import numpy as np
import pytest

from deltarnn.device.image import DeviceFitError, check_fits, input_deltas, pack, weight_places, weight_words
from deltarnn.quant.golden import emulate
from deltarnn.quant.quantizer import quantize
from deltarnn.spec import contract as C
from deltarnn.spec.cells import CELLS
from deltarnn.spec.memory_map import (VECTOR_ORDER, DeviceParams, LayerReg, Reg, Region, REGION_SHIFT, ceil_div,
                                      layer_reg)

#: The registers that hold each path's weight base and slices (minus 1).
PLACE_REGS = {"x": (LayerReg.X_WBASE, LayerReg.X_SLICES), "h": (LayerReg.H_WBASE, LayerReg.H_SLICES)}

from tests.helpers import random_input, random_model


def _model(cell, n_in=7, hidden=9, layers=2, classes=5, theta=0):
    m = random_model(cell, n_in, hidden, layers, False, classes=classes, seed=3)
    qm = quantize(m, random_input(2, 20, n_in, seed=4), 4, 8, skip=["1.h"] if cell != "sru" else ["1.x"])
    qm.set_thresholds(theta, theta)
    return qm


def _params(cell, lanes=4, wmem_bits=16, max_wbits=0):
    return DeviceParams(cell, lanes=lanes, max_input=12, max_hidden=16, max_layers=3, max_classes=8,
                        wmem_bits=wmem_bits, abits=16, acc_bits=48, max_wbits=max_wbits)


def _unpack(img, p, base, slices, rows, cols, acc_base):
    """Read a rows x cols matrix and its multipliers back from the image, as the MxV addresses them:
    column j's slice s at ``base + (j * slices + s) * words``, the low slices unsigned, the top one signed."""
    words = ceil_div(rows, p.lanes)
    flat = img.weights.reshape(-1)
    w = np.zeros((rows, cols), dtype=np.int64)
    for s in range(slices):
        digit = np.array([[flat[(base + (j * slices + s) * words + r // p.lanes) * p.lanes + r % p.lanes]
                           for j in range(cols)] for r in range(rows)])
        if s < slices - 1:
            assert (digit >= 0).all() and (digit < 1 << p.wmem_bits).all()
        w += digit << (s * p.wmem_bits)
    return w, img.mult[acc_base * p.lanes:acc_base * p.lanes + rows]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lanes, wmem_bits", [(1, 16), (4, 16), (8, 16), (4, 4), (8, 8)])
def test_every_matrix_reads_back_where_the_core_looks(cell, lanes, wmem_bits):
    """Every matrix at the base and slices its registers give (a skipped 16-bit path as slices of narrow slots)."""
    qm = _model(cell)
    p = _params(cell, lanes, wmem_bits, max_wbits=16)
    img = pack(qm, p)
    placed = 0
    for i, layer in enumerate(qm.layers):
        d = layer.directions[0]
        for path, m in (("x", d.x), ("h", d.h)):
            if m is None:
                continue
            base, slices = (img.regs[layer_reg(i, r)] for r in PLACE_REGS[path])
            assert slices + 1 == -(-m.wbits // wmem_bits)
            w, mult = _unpack(img, p, base, slices + 1, m.rows, m.cols, p.acc_base(i, path))
            np.testing.assert_array_equal(w, m.weights)
            np.testing.assert_array_equal(mult, m.mult)
            placed += np.count_nonzero(m.weights)
        vec = np.concatenate([d.vectors[k] for k in VECTOR_ORDER[cell]])
        np.testing.assert_array_equal(img.vec[p.vec_base(i):p.vec_base(i) + vec.size], vec)
        assert img.regs[layer_reg(i, LayerReg.XA_BITS)] == layer.x_act.bits
        assert img.regs[layer_reg(i, LayerReg.X_SHIFT)] == d.x.shift
    h = qm.head
    w, mult = _unpack(img, p, img.regs[Reg.HEAD_WBASE], img.regs[Reg.HEAD_SLICES] + 1, h.matrix.rows,
                      h.matrix.cols, p.acc_base(p.max_layers, "x"))
    np.testing.assert_array_equal(w, h.matrix.weights)
    np.testing.assert_array_equal(mult, h.matrix.mult)
    placed += np.count_nonzero(h.matrix.weights)
    # the matrices lie one after another from word 0, nothing outside them
    places = sorted(weight_places(qm, p).values(), key=lambda pl: pl.base)
    assert [pl.base for pl in places] == [0] + list(np.cumsum([pl.words for pl in places])[:-1])
    assert not img.weights[weight_words(qm, p):].any()
    if wmem_bits == 16:
        assert np.count_nonzero(img.weights) == placed
    assert (img.regs[Reg.LAYERS], img.regs[Reg.INPUT], img.regs[Reg.HIDDEN], img.regs[Reg.CLASSES]) == \
        (qm.num_layers, qm.input_size, qm.hidden_size, qm.num_classes)


def _apply(writes, p):
    """Replay WRITE commands into empty memories, as the core's decoder does."""
    weights = np.zeros(p.weight_depth * p.lanes, dtype=np.int64)
    mult = np.zeros(p.acc_depth * p.lanes, dtype=np.int64)
    vec = np.zeros(p.vec_depth, dtype=np.int64)
    regs = {}
    for a, data in writes:
        assert 0 <= data < 1 << 32
        region, offset = Region(a >> REGION_SHIFT), a & ((1 << REGION_SHIFT) - 1)
        signed = data - (1 << 32) if data >> 31 else data
        if region == Region.REG:
            regs[offset] = data
        elif region == Region.WEIGHT:
            weights[offset] = signed
        elif region == Region.MULT:
            mult[offset] = data
        else:
            vec[offset] = signed
    return weights.reshape(p.weight_depth, p.lanes), mult, vec, regs


@pytest.mark.parametrize("every_word", [False, True])
def test_writes_rebuild_the_image(every_word):
    qm = _model("gru")
    p = _params("gru")
    img = pack(qm, p)
    writes = img.writes(every_word=every_word)
    weights, mult, vec, regs = _apply(writes, p)
    np.testing.assert_array_equal(weights, img.weights)
    np.testing.assert_array_equal(mult, img.mult)
    np.testing.assert_array_equal(vec, img.vec)
    assert regs == {int(a): v for a, v in img.regs.items()}
    words = img.weights.size + img.mult.size + img.vec.size
    memory_writes = len(writes) - len(img.regs)
    if every_word:
        assert memory_writes == words
    else:
        assert memory_writes == np.count_nonzero(img.weights) + np.count_nonzero(img.mult) + \
            np.count_nonzero(img.vec) < words


def test_core_init_names_the_cores_arguments():
    img = pack(_model("lstm"), _params("lstm"))
    init = img.core_init()
    assert set(init) == {"weights", "mult", "vec", "regs"} and init["weights"] is img.weights


def test_check_fits_names_every_reason():
    qm = _model("lstm", n_in=20, hidden=9)
    p = DeviceParams("gru", lanes=4, max_input=16, max_hidden=8, max_layers=1, max_classes=4, wmem_bits=2,
                     abits=4, acc_bits=48)
    with pytest.raises(DeviceFitError) as e:
        check_fits(qm, p)
    msg = str(e.value)
    for part in ("the model is an LSTM but the core was built for GRU", "2 layers > the core's 1",
                 "input size 20 > the core's 16", "hidden size 9 > the core's 8", "5 classes > the core's 4",
                 "-bit activations > the core's 4", "-bit weights > the core's widest, 2 bits"):
        assert part in msg
    with pytest.raises(DeviceFitError, match="bidirectional"):
        pack(quantize(random_model("gru", 3, 4, 1, True, classes=2), random_input(1, 5, 3), 4, 8), _params("gru"))


@pytest.mark.parametrize("theta", [0, 1, 3])
def test_input_deltas_follow_the_delta_rule(theta):
    qm = _model("gru", theta=theta)
    x = random_input(1, 30, 7, seed=9, scale=0.5)
    steps = input_deltas(qm, x[0])
    act = qm.layers[0].x_act
    q = C.quantize_float_input(x[0], act.scale, act.bits)
    ref = np.zeros(q.shape[1], dtype=np.int64)
    for t, pairs in enumerate(steps):
        fired = {j for j, _ in pairs}
        assert fired == set(np.flatnonzero(np.abs(q[t] - ref) > theta))
        for j, d in pairs:
            assert d == q[t, j] - ref[j] and d != 0
            ref[j] += d
    # the golden model counts the same deltas on layer 0's x path
    assert emulate(qm, x).stats.paths["0.x"].deltas == sum(len(s) for s in steps)


def test_largest_regions_do_not_wrap():
    """An LSTM 3 x 256 at 32 lanes spans more than 2**20 weight addresses (20-bit offsets once wrapped)."""
    p = DeviceParams("lstm", lanes=32, max_input=40, max_hidden=256, max_layers=3, max_classes=64, wmem_bits=4,
                     abits=8, acc_bits=32)
    m = random_model("lstm", 40, 256, 3, False, classes=40, seed=5)
    qm = quantize(m, random_input(2, 8, 40, seed=6), 4, 8)
    img = pack(qm, p)
    assert weight_words(qm, p) * p.lanes > 1 << 20
    weights, mult, vec, _ = _apply(img.writes(), p)
    np.testing.assert_array_equal(weights, img.weights)
    np.testing.assert_array_equal(mult, img.mult)
    np.testing.assert_array_equal(vec, img.vec)


def test_a_core_beyond_the_address_field_is_refused():
    with pytest.raises(ValueError, match="WEIGHT region.*lower the maximum sizes"):
        DeviceParams("lstm", lanes=64, max_input=1024, max_hidden=1024, max_layers=8, wmem_bits=4)


def test_a_model_whose_weights_do_not_fit_the_weight_memory_is_refused():
    qm = _model("gru")
    p = _params("gru", 4, 4, max_wbits=16)
    need = weight_words(qm, p)
    assert need > weight_words(quantize(random_model("gru", 7, 9, 2, False, classes=5, seed=3),
                                        random_input(2, 20, 7, seed=4), 4, 8), p)   # the skipped path's slices
    pack(qm, DeviceParams(**{**p.as_dict(), "weight_words": need}))
    with pytest.raises(DeviceFitError, match=f"its weights need {need} words of 4 slots > the core's {need - 1}"):
        pack(qm, DeviceParams(**{**p.as_dict(), "weight_words": need - 1}))


def test_registers_are_checked_and_thresholds_clipped_to_the_core():
    from deltarnn.device.image import register_name

    p = _params("gru")
    qm = _model("gru", theta=10 ** 6)
    regs = pack(qm, p).regs
    limits = p.reg_limits()
    for a in (layer_reg(0, LayerReg.XA_THETA), layer_reg(1, LayerReg.HA_THETA), Reg.HEAD_THETA):
        assert regs[a] == limits[int(a)][1] < 10 ** 6        # the core saturates any larger threshold alike
    assert all(lo <= regs[a] <= hi for a, (lo, hi) in limits.items() if a in regs)
    qm.layers[1].x_act.shift = C.SHIFT_MAX + 1
    with pytest.raises(DeviceFitError, match=f"its layer 1 XA_SHIFT is {C.SHIFT_MAX + 1}, the core takes 0..{C.SHIFT_MAX}"):
        pack(qm, p)
    assert register_name(int(Reg.HIDDEN)) == "HIDDEN"


def test_engine_lanes_default_to_the_mac_lanes_and_are_checked():
    """Above 8 MAC lanes one neuron per 8 of them, at most 8, dividing the maximum hidden size; else, and for
    SRU, 1."""
    def width(cell="gru", lanes=32, max_hidden=256, **kw):
        return DeviceParams(cell, lanes=lanes, max_hidden=max_hidden, **kw).engine_width

    assert [width(lanes=n) for n in (1, 4, 8, 16, 32, 64, 128)] == [1, 1, 1, 2, 4, 8, 8]
    assert width(max_hidden=254) == 2 and width(max_hidden=255) == 1 and width(cell="sru") == 1
    assert width(lanes=4, engine_lanes=2) == 2 and width(lanes=8, engine_lanes=8) == 8
    p = DeviceParams("lstm", lanes=32, max_hidden=128)
    assert (p.mult_words, p.vec_words, p.state_words) == (p.acc_depth * 32 // 4, ceil_div(p.vec_depth, 4),
                                                          p.state_depth // 4)
    for kw, match in ((dict(engine_lanes=3), "power of two"), (dict(engine_lanes=16), "at most 8"),
                      (dict(lanes=2, engine_lanes=4), "divides lanes"),
                      (dict(max_hidden=6, engine_lanes=4), r"max_hidden \(6\)"),
                      (dict(cell="sru", engine_lanes=2), "SRU core's engine")):
        with pytest.raises(ValueError, match=match):
            width(**kw)
    assert DeviceParams("gru", lanes=64, max_hidden=256).engine_for(24).engine_width == 8
    assert DeviceParams("gru", lanes=32, max_hidden=256).engine_for(20).engine_width == 4
    assert DeviceParams("gru", lanes=32, max_hidden=256).engine_for(10).engine_width == 2
    assert DeviceParams("gru", lanes=32, max_hidden=256).engine_for(9).engine_width == 1
