"""``deltarnn run``, as a user runs it: on the simulated board, and with a port that does not exist."""

import json

import numpy as np
import pytest

from deltarnn.cli import main
from deltarnn.quant.golden import emulate
from deltarnn.quant.qmodel import QModel
from deltarnn.quant.quantizer import quantize

from tests.helpers import random_input, random_model


@pytest.fixture
def files(tmp_path):
    qm = quantize(random_model("gru", 6, 10, 2, False, 3, seed=7), random_input(4, 20, 6, seed=2), 4, 8)
    qm.save(tmp_path / "m.qmodel")
    np.save(tmp_path / "x.npy", random_input(2, 10, 6, seed=8))
    np.save(tmp_path / "one.npy", random_input(1, 10, 6, seed=8)[0])
    np.save(tmp_path / "bad.npy", np.zeros((2, 10, 5), np.float32))
    return tmp_path


@pytest.mark.slow
def test_run_on_the_simulated_board_verifies_and_reports(files, capsys):
    d = files
    assert main(["run", str(d / "m.qmodel"), "--input", str(d / "x.npy"), "--sim", "--verify", "--json",
                 "--theta-x", "1", "--theta-h", "1", "--output", str(d / "y.npy")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mismatches"] == 0 and out["timesteps"] == 20 and out["passes"] == 1
    assert out["bytes_sent"] > 0 and out["device_cycles"] > 0 and out["seconds"] > 0
    qm = QModel.load(d / "m.qmodel")
    qm.set_thresholds(1, 1)
    assert np.array_equal(np.load(d / "y.npy"), emulate(qm, np.load(d / "x.npy")).outputs_fx)
    assert main(["run", str(d / "m.qmodel"), "--input", str(d / "one.npy"), "--sim", "--verify"]) == 0
    text = capsys.readouterr().out
    assert "OK: 0 of 30 outputs differ" in text and "per time step" in text


@pytest.mark.parametrize("argv,message", [
    (["--port", "/dev/does-not-exist"], "cannot open serial port /dev/does-not-exist: no such device"),
    (["--sim", "--input", "{d}/bad.npy"], "expected (batch, time, 6)"),
    (["--sim", "--lanes", "4", "--input", "{d}/none.npy"], "no such file"),
    (["--sim", "--board", "de10-nano"], "unknown board 'de10-nano': choose one of icebreaker, ulx3s-85f"),
])
def test_run_errors_are_one_line(files, capsys, argv, message):
    d = files
    args = ["run", str(d / "m.qmodel"), "--input", str(d / "x.npy")] + argv
    assert main([a.format(d=d) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deltarnn: error: ") and message in err


def test_run_needs_a_port_or_the_simulator(files, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(files / "m.qmodel"), "--input", str(files / "x.npy")])
    assert e.value.code == 2 and "one of the arguments --port --sim is required" in capsys.readouterr().err
