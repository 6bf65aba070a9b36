"""Co-simulation of the whole core in Verilator (cocotb) against the golden model.

Every test builds (or reuses, from ``build/sim/``) a Verilator model of
:class:`deltarnn.hw.core.Core`, loads a QModel with the host's WRITE commands, runs its
sequences and compares every output and every layer's hidden state after
every step with :func:`deltarnn.quant.golden.emulate` (:mod:`deltarnn.sim.cosim`, :mod:`deltarnn.sim.tb_core`).

The core's parameters are fixed per cell type (one Verilator build each, plus
one of the random-initial-state variant); hypothesis randomises only the
QModel.  ``make test`` runs a few hundred time steps per cell type;
``make test-all`` (``DELTARNN_FULL=1``) runs at least 10,000 per cell type.
"""

from __future__ import annotations

import functools
import json
import re
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltarnn.sim import cosim, runner, tb_core
from deltarnn.spec import contract as C
from deltarnn.spec.cells import CELLS
from deltarnn.spec.memory_map import DeviceParams, Op, Reg
from deltarnn.device.image import DeviceFitError, weight_words
from deltarnn.quant.quantizer import path_names, quantize
from tests.helpers import random_input, random_model

from tests.conftest import FULL

#: The core of every cell type's build (as in tests/hw/test_core.py).
PARAMS = dict(lanes=4, max_input=16, max_hidden=40, max_layers=3, max_classes=8, wmem_bits=16, abits=16,
              acc_bits=48)
#: Time steps per cell type of the trained model's run.
LONG_STEPS = 10_000 if FULL else 300
EXAMPLES = 10 if FULL else 3
MAX_STEPS = 60 if FULL else 25
SEEDS = (1, 2, 3) if FULL else (1, 2)


def _verilator_missing() -> str | None:
    try:
        runner.check_simulator("verilator")
    except runner.SimulatorNotFound as e:
        return str(e)
    return None


pytestmark = pytest.mark.skipif(_verilator_missing() is not None, reason=str(_verilator_missing()))


def params(cell: str) -> DeviceParams:
    return DeviceParams(cell, **PARAMS)


def run(qm, x, tmp_path, cell=None, **kw) -> cosim.CosimResult:
    run_dir = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    return cosim.run_cosim(qm, x, params=kw.pop("params", None) or params(cell or qm.cell), run_dir=run_dir, **kw)


# --- models ---------------------------------------------------------------------------------------


def make_case(cell, n_in, hidden, layers, classes, wbits, abits, skip=(), theta_x=0, theta_h=0, batch=1,
              steps=8, hold=2, scale=1.0, seed=0):
    """A random model quantized as asked, and inputs whose frames repeat ``hold`` times."""
    model = random_model(cell, n_in, hidden, layers, False, classes, seed=seed)
    qm = quantize(model, random_input(4, 20, n_in, seed=seed + 2, scale=scale), wbits, abits, skip=list(skip))
    qm.set_thresholds(theta_x, theta_h)
    x = np.repeat(random_input(batch, -(-steps // hold), n_in, seed=seed + 1, scale=scale), hold, axis=1)
    return qm, x[:, :steps]


@st.composite
def model_configs(draw, cell: str, max_steps: int):
    layers = draw(st.integers(1, PARAMS["max_layers"]))
    classes = draw(st.integers(0, PARAMS["max_classes"]))
    return dict(
        n_in=draw(st.integers(1, PARAMS["max_input"])), hidden=draw(st.integers(1, PARAMS["max_hidden"])),
        layers=layers, classes=classes, wbits=draw(st.integers(C.MIN_BITS, C.MAX_BITS)),
        abits=draw(st.integers(C.MIN_BITS, C.MAX_BITS)),
        skip=draw(st.lists(st.sampled_from(path_names(layers, cell, classes > 0)), unique=True, max_size=3)),
        theta_x=draw(st.integers(0, 3)), theta_h=draw(st.integers(0, 3)), batch=draw(st.integers(1, 2)),
        steps=draw(st.integers(1, max_steps)), hold=draw(st.integers(1, 3)),
        scale=draw(st.sampled_from([0.25, 1.0, 4.0])), seed=draw(st.integers(0, 2 ** 16)))


@functools.lru_cache(maxsize=None)
def trained(cell: str):
    """A 2-layer model trained on deltarnn.speech.synthetic's task (under a second), quantized 4/8 bit."""
    import torch

    from deltarnn.models import RNNModel
    from deltarnn.speech.synthetic import make_task
    from deltarnn.speech.train import frame_accuracy, train_frames

    x, y = make_task(32, 40, seed=0)
    torch.manual_seed(0)
    model = RNNModel(cell, x.shape[2], 24, num_layers=2, num_classes=int(y.max()) + 1)
    train_frames(model, x, y, epochs=4, lr=2e-2, seed=0)
    xt, yt = make_task(8, 100, seed=1)
    with torch.no_grad():
        accuracy = frame_accuracy(model(torch.as_tensor(xt)).numpy(), yt)
    assert accuracy > 0.4, f"{cell} did not train ({accuracy:.2f})"
    return quantize(model, x[:16], wbits=4, abits=8)


# --- no simulator needed ----------------------------------------------------------------------------


def test_testbench_constants_match_the_device():
    from deltarnn.hw.core import command_layout

    assert (tb_core.OP_WRITE, tb_core.OP_READ, tb_core.OP_DELTA, tb_core.OP_STEP, tb_core.OP_RESET) == \
        (Op.WRITE, Op.READ, Op.DELTA, Op.STEP, Op.RESET)
    assert (tb_core.REG_CYCLES, tb_core.REG_STEP_CYCLES, tb_core.REG_STEPS) == \
        (Reg.CYCLES, Reg.STEP_CYCLES, Reg.STEPS)
    layout = command_layout()
    assert (layout["op"].offset, layout["addr"].offset, layout["data"].offset) == (0, tb_core.ADDR_SHIFT,
                                                                                 tb_core.DATA_SHIFT)
    assert layout.size == 63 and tb_core.ADDR_MASK == (1 << layout["addr"].width) - 1


def test_device_params_are_sized_to_the_model():
    qm = quantize(random_model("gru", 5, 13, 2, False, 3), random_input(2, 4, 5), 6, 8, skip=["1.h"])
    p = cosim.device_params_for(qm, lanes=2)
    assert (p.cell, p.lanes, p.max_input, p.max_hidden, p.max_layers, p.max_classes) == ("gru", 2, 8, 16, 2, 4)
    # most weights are 6-bit: 8-bit slots; the skipped 16-bit path runs as two slices of them
    assert (p.wmem_bits, p.max_wbits, p.abits) == (8, 16, 16)
    assert p.acc_bits >= qm.accumulator_bits() and p.acc_bits % 8 == 0
    assert p.weight_depth >= weight_words(qm, p)
    qm = quantize(random_model("lstm", 5, 6, 1, False, 0), random_input(2, 4, 5), 4, 8)
    p = cosim.device_params_for(qm)
    assert (p.max_classes, p.wmem_bits, p.abits) == (4, 4, 8)
    bi = quantize(random_model("gru", 5, 6, 1, True, 0), random_input(2, 4, 5), 4, 8)
    with pytest.raises(DeviceFitError, match="bidirectional"):
        cosim.device_params_for(bi)


def test_verilog_variants():
    """The exported core: state memories found, RAM init stripped (ROMs kept), VPI-visible names."""
    sources, _ = cosim.export_core(params("lstm"), build_args=cosim.verilator_args())
    text = sources[0].read_text()
    assert cosim.state_memory_name(text) == "h" and cosim.state_memory_name(text, "c") == "c"
    assert "h[0] = 16'h0000;" in text
    stripped = cosim.strip_memory_init(text)
    for ram in ("h", "c", "acc", "ref", "dbuf"):
        assert f"  {ram}[0] = " not in stripped
    assert stripped.count("initial begin") < text.count("initial begin")
    sig0 = int(C.table("sigmoid")[0])
    assert f"= 16'h{sig0 & 0xFFFF:04x};" in stripped                    # the activation ROMs keep theirs
    vlt = sources[1].read_text()
    for name in ("clk", "rst", "cmd__payload", "cmd__valid", "cmd__ready", "rsp__payload", "rsp__valid",
                 "rsp__ready", "h", "c"):
        assert f'-var "{name}"' in vlt


# --- the core against the golden model ------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_random_configurations(cell, tmp_path_factory):
    """Random QModels (sizes, widths, skipped paths, thresholds, sequences) on each cell's core."""

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not FULL,
              suppress_health_check=[HealthCheck.too_slow])
    @given(model_configs(cell, MAX_STEPS))
    def check(config):
        qm, x = make_case(cell, **config)
        res = run(qm, x, tmp_path_factory.mktemp(cell))
        res.check()
        assert res.timesteps == x.shape[0] * x.shape[1]
        assert res.cycle_model_mismatches == 0, res.first_cycle_mismatch

    check()


def test_sru_identity_highway(tmp_path):
    """SRU with input size == hidden size: every layer's highway is the x path's references."""
    qm, x = make_case("sru", 12, 12, 3, 5, 4, 8, skip=["2.x"], theta_x=1, batch=2, steps=30)
    assert all(layer.directions[0].highway is not None for layer in qm.layers)
    res = run(qm, x, tmp_path)
    res.check()
    assert res.cycle_model_mismatches == 0


def test_skipped_path_on_a_4_bit_build(tmp_path):
    """The study's GRU shape of skipping: a 16-bit head (and h path) on 4-bit weight slots, as slices."""
    qm, x = make_case("gru", 9, 20, 2, 6, 4, 8, skip=["head.x", "1.h"], theta_x=1, theta_h=1, batch=2, steps=20)
    p = cosim.device_params_for(qm)
    assert (p.wmem_bits, p.max_wbits, p.max_slices) == (4, 16, 4)
    res = run(qm, x, tmp_path, params=p)
    res.check()
    assert res.timesteps == 40 and res.cycle_model_mismatches == 0


@pytest.mark.parametrize("cell, lanes, engine_lanes", [("lstm", 16, 4), ("gru", 4, 2), ("gru", 32, 8)])
def test_engine_lanes(cell, lanes, engine_lanes, tmp_path):
    """An engine that updates E neurons at once (4: the default of a 32-lane core; 8: an item every 8 cycles),
    its h read back from E-element words; its encodes fed by the update (16, 32 lanes) or scanned (4)."""
    qm, x = make_case(cell, 9, 16, 2, 5, 4, 8, theta_x=1, theta_h=1, batch=2, steps=15)
    p = DeviceParams(cell, **{**PARAMS, "lanes": lanes, "engine_lanes": engine_lanes})
    res = run(qm, x, tmp_path, params=p)
    res.check()
    assert res.timesteps == 30 and res.cycle_model_mismatches == 0


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_trained_model_long_run(cell, tmp_path):
    """A model trained by the project on deltarnn.speech.synthetic's task: LONG_STEPS time steps, zero mismatches."""
    from deltarnn.speech.synthetic import make_task

    qm = trained(cell)
    qm.set_thresholds(1, 1)
    n_seq = 4 if FULL else 2
    x, _ = make_task(n_seq, -(-LONG_STEPS // n_seq), seed=7)
    res = run(qm, x, tmp_path)
    res.check()
    assert res.timesteps >= LONG_STEPS and res.cycle_model_mismatches == 0
    print(f"\n{cell}: {res.timesteps} steps, {res.cycles_per_timestep:.0f} cycles/step, "
          f"{res.sim_cycles_per_s:,.0f} cycles/s ({res.sim_cycles_per_cpu_s:,.0f} per CPU-s), "
          f"sim {res.sim_wall_s:.1f} s, build {res.build_s:.1f} s")


@pytest.mark.parametrize("cell", CELLS)
def test_random_initial_state(cell, tmp_path):
    """Every variable without an initial value, and every RAM, starts random (several seeds).

    The core must read nothing it did not write or clear: the host writes every
    word of the weight, multiplier and vector memories (``full_image``), RESET
    clears the rest.
    """
    qm, x = make_case(cell, 7, 10, 2, 3, 4, 8, theta_x=1, theta_h=1, batch=2, steps=12, seed=11)
    for seed in SEEDS:
        res = run(qm, x, tmp_path, random_state=seed, strip_init=True, full_image=True)
        res.check()
        assert res.variant["build_args"][-4:] == list(cosim.RANDOM_STATE_ARGS)


def test_reads_of_unwritten_memory_are_caught(tmp_path):
    """With random RAM contents, loading only the non-zero words (``pack().writes()``) fails.

    This is what a device that ran another model before would compute: the
    suite sees memory that the core reads but nobody wrote.
    """
    qm, x = make_case("gru", 7, 10, 2, 3, 4, 8, theta_x=1, theta_h=1, batch=2, steps=12, seed=11)
    assert (qm.layers[0].directions[0].x.weights == 0).any()         # zero weights are skipped
    res = run(qm, x, tmp_path, random_state=1, strip_init=True, full_image=False)
    assert res.mismatches > 0 and not res.ok


def _faulty_golden(qm, x, lanes: int, lane: int, monkeypatch):
    """The golden model with the core's test-only fault: floor instead of round half up in one lane."""
    import deltarnn.quant.golden as G
    import deltarnn.quant.kernels as K

    good, good_exact = G.rounding_constants, K.requantization_exact

    def broken(m):       # no rounding constant, so the shift floors, in the rows of the broken lane
        return np.where(np.arange(m.rows) % lanes == lane, 0, good(m))

    def broken_exact(m, bound):     # the kernels' int64 form, which takes a rounding constant per row
        scaled, half, mult, _, shift, _ = good_exact(m, bound)
        return scaled, half, mult, broken(m), shift, False

    with monkeypatch.context() as mp:
        mp.setattr(G, "rounding_constants", broken)
        mp.setattr(K, "requantization_exact", broken_exact)
        return G.emulate(qm, x)


def _first_divergence(good, bad):
    """First (sequence, step, layer, neuron) where two emulations differ: layers first, then the head."""
    bsz, steps = good.outputs_fx.shape[:2]
    for b in range(bsz):
        for t in range(steps):
            for layer, (g, f) in enumerate(zip(good.layer_outputs_fx, bad.layer_outputs_fx)):
                diff = np.flatnonzero(g[b, t] != f[b, t])
                if diff.size:
                    n = int(diff[0])
                    return dict(sequence=b, step=t, layer=layer, neuron=n, golden=int(g[b, t, n]),
                                rtl=int(f[b, t, n]))
            diff = np.flatnonzero(good.outputs_fx[b, t] != bad.outputs_fx[b, t])
            if diff.size:
                n = int(diff[0])
                return dict(sequence=b, step=t, layer="head", neuron=n, golden=int(good.outputs_fx[b, t, n]),
                            rtl=int(bad.outputs_fx[b, t, n]))
    return None


@pytest.mark.parametrize("case", [
    ("gru", 9, 14, 2, 0, 8, 8, [], 1, 1),        # no head: the divergence is in a layer's state
    ("lstm", 9, 14, 2, 6, 6, 8, ["0.x"], 0, 1),
], ids=lambda c: f"{c[0]}-classes{c[4]}")
def test_broken_lane_is_caught_and_located(case, tmp_path, monkeypatch):
    """The suite can fail: the fault-injected core is caught and the report names the right place."""
    from deltarnn.spec.memory_map import X_BLOCKS
    from deltarnn.quant.golden import emulate

    cell, n_in, hidden, layers, classes, wbits, abits, skip, theta_x, theta_h = case
    lane = 1
    qm, x = make_case(cell, n_in, hidden, layers, classes, wbits, abits, skip, theta_x, theta_h, batch=2,
                      steps=12, seed=3)
    good = emulate(qm, x)
    bad = _faulty_golden(qm, x, PARAMS["lanes"], lane, monkeypatch)
    expected = _first_divergence(good, bad)
    assert expected is not None, "the fault does not show in this case; pick another"

    res = run(qm, x, tmp_path, broken_lane=lane)
    assert not res.ok and res.mismatches > 0
    got = {k: res.first_divergence[k] for k in expected}
    assert got == expected, (got, expected)
    # Independently of the fault model: the neuron has an accumulator row in the broken lane.
    n = got["neuron"]
    rows = [n] if got["layer"] == "head" else [g * hidden + n for g in range(X_BLOCKS[cell])]
    assert any(r % PARAMS["lanes"] == lane for r in rows)
    # The cocotb test failed with the same report.
    with pytest.raises(runner.CocotbTestFailure, match=re.escape("first divergence: " + tb_core.describe(expected))):
        runner.check_results(res.results_xml)
    # And the fault model predicts every integer of the faulty RTL.
    again = run(qm, x, tmp_path, broken_lane=lane, golden=bad)
    again.check()


@pytest.mark.skipif(shutil.which("iverilog") is None,
                    reason="iverilog (Icarus Verilog, a system package) is not installed")
def test_icarus_four_state(tmp_path):
    """The same testbench 4-state: X anywhere in the outputs or the state fails."""
    qm, x = make_case("gru", 6, 9, 2, 3, 4, 8, theta_x=1, theta_h=1, steps=6, seed=5)
    res = run(qm, x, tmp_path, simulator="icarus")
    res.check()


# --- the command line -----------------------------------------------------------------------------------


def test_cli_cosim(tmp_path, capsys):
    from deltarnn.cli import main

    qm, x = make_case("gru", 4, 7, 1, 3, 4, 8, theta_x=1, batch=2, steps=10, seed=9)
    model, inputs, waves = tmp_path / "m.qmodel", tmp_path / "x.npy", tmp_path / "w.vcd"
    qm.save(model)
    np.save(inputs, x.astype(np.float32))
    assert main(["cosim", str(model), "--input", str(inputs), "--json", "--waves", str(waves)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mismatches"] == 0 and out["timesteps"] == 20
    for key in ("cycles", "cycles_per_timestep", "sim_cycles_per_s"):
        assert out[key] > 0
    assert out["params"]["max_hidden"] == 8 and out["params"]["cell"] == "gru"
    with open(waves) as f:
        assert f.read(100).startswith("$version")

    bi = tmp_path / "bi.qmodel"
    quantize(random_model("gru", 4, 7, 1, True, 0), random_input(2, 4, 4), 4, 8).save(bi)
    assert main(["cosim", str(bi), "--input", str(inputs)]) == 2
    assert "bidirectional" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["cosim", str(model), "--input", str(inputs), "--lanes", "3"])
    assert e.value.code == 2 and "argument --lanes: must be a power of two, got 3" in capsys.readouterr().err
