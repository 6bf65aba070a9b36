"""The deltarnn command line, as a user runs it."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from deltarnn.cli import main

from tests.helpers import random_input, random_model


@pytest.fixture
def model_file(tmp_path):
    m = random_model("lstm", 6, 10, 2, False, classes=4)
    path = tmp_path / "model.pt"
    torch.save(m, path)
    x = random_input(3, 40, 6)
    np.save(tmp_path / "x.npy", x)
    return tmp_path, path


def test_quantize_then_emulate_json(model_file, capsys):
    d, path = model_file
    q = d / "m.qmodel"
    assert main(["quantize", str(path), "-o", str(q), "--wbits", "4", "--abits", "8",
                 "--skip", "0.x", "1.h", "--calib", str(d / "x.npy")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["emulate", str(q), "--input", str(d / "x.npy"), "--json", "--output", str(d / "y.npy")]) == 0
    report = json.loads(capsys.readouterr().out)
    stats = report["stats"]
    for key in ("macs_dense", "macs_needed", "eliminated_pct", "weight_bits", "compression_pct"):
        assert key in stats
    assert stats["paths"]["0.x"]["eliminated_pct"] == 0.0   # random inputs change every step at 16 bits
    assert np.load(d / "y.npy").shape == (3, 40, 4)
    assert main(["emulate", str(q), "--input", str(d / "x.npy"), "--json", "--theta-x", "5", "--theta-h", "5"]) == 0
    high = json.loads(capsys.readouterr().out)
    assert high["thresholds"]["0.h"] == 5 and high["stats"]["eliminated_pct"] > stats["eliminated_pct"]
    assert main(["emulate", str(q), "--input", str(d / "x.npy")]) == 0
    assert "eliminated" in capsys.readouterr().out


def test_random_calibration_says_so(model_file, capsys):
    d, path = model_file
    assert main(["quantize", str(path), "-o", str(d / "r.qmodel")]) == 0
    assert "random normal data" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["quantize", "{d}/missing.pt", "-o", "{d}/o.qmodel"], "no such file"),
    (["quantize", "{d}/x.npy", "-o", "{d}/o.qmodel"], "not a PyTorch model file"),
    (["quantize", "{d}/model.pt", "-o", "{d}/o.qmodel", "--skip", "7.x"], "unknown path(s) to skip: 7.x"),
    (["quantize", "{d}/model.pt", "-o", "{d}/o.qmodel", "--calib", "{d}/bad.npy"], "expected (batch, time, 6)"),
    (["quantize", "{d}/model.pt", "-o", "{d}/nodir/o.qmodel"], "does not exist"),
    (["emulate", "{d}/x.npy", "--input", "{d}/x.npy"], "not a deltarnn QModel file"),
    (["emulate", "{d}/ok.qmodel", "--input", "{d}/bad.npy"], "expected (batch, time, 6)"),
    (["emulate", "{d}/ok.qmodel", "--input", "{d}/none.npy"], "no such file"),
    (["emulate", "{d}/ok.qmodel", "--input", "{d}/model.pt"], "not a NumPy .npy array"),
])
def test_user_errors_are_one_line(model_file, capsys, argv, message):
    d, path = model_file
    np.save(d / "bad.npy", np.zeros((2, 5, 3), np.float32))
    main(["quantize", str(path), "-o", str(d / "ok.qmodel")])
    capsys.readouterr()
    assert main([a.format(d=d) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("deltarnn: error: ") and message in err and "Traceback" not in err


def test_bad_flag_values_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["quantize", "m.pt", "-o", "o", "--wbits", "17"])
    assert e.value.code == 2 and "argument --wbits: must be between 2 and 16 bits, got 17" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["cosim", "m.qmodel", "--input", "x.npy", "--lanes", "6"])
    assert e.value.code == 2 and "argument --lanes: must be a power of two, got 6" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["emulate", "m.qmodel", "--input", "x.npy", "--theta-x", "-1"])


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "deltarnn.cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert "quantize" in out and "emulate" in out and "demo" in out


@pytest.mark.slow
def test_demo_runs(tmp_path):
    from deltarnn.cli.demo import run_demo

    from tests.conftest import FULL

    lines = []
    figures = run_demo(out=lines.append, work_dir=tmp_path, board_utterances=1, bitstream=FULL)
    assert [line[:3] for line in lines if line[:1].isdigit()] == ["1/5", "2/5", "3/5", "4/5"] + (["5/5"] if FULL else [])
    assert figures["float"]["per"] < 25 and figures["compression_pct"] > 85
    from deltarnn.cli.demo import THRESHOLDS

    diagonal = [p["eliminated_pct"] for p in figures["points"] if (p["theta_x"], p["theta_h"]) in THRESHOLDS]
    assert len(diagonal) == len(THRESHOLDS) and diagonal == sorted(diagonal) and diagonal[-1] > diagonal[0]
    assert figures["chosen"] in figures["points"]                  # the study's choice is in the table
    assert any("(study's choice)" in line for line in lines)
    assert figures["board"]["equal"] and figures["board"]["cycles_per_step"] > 0
    assert (tmp_path / "per_vs_eliminated.png").stat().st_size > 10_000
    if FULL:
        assert figures["bitstream"]["utilization"]
