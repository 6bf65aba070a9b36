"""A new user's mistakes, one line each and a non-zero exit: the bad-input pass over the commands."""

import numpy as np
import pytest
import torch

from deltarnn.cli import main

from tests.helpers import random_input, random_model


@pytest.fixture
def d(tmp_path):
    torch.save(random_model("gru", 6, 8, 1, False, classes=3), tmp_path / "m.pt")
    x = random_input(2, 10, 6)
    np.save(tmp_path / "x.npy", x)
    x[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", x)
    np.save(tmp_path / "empty.npy", np.zeros((0, 10, 6), np.float32))
    assert main(["quantize", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.qmodel"),
                 "--calib", str(tmp_path / "x.npy")]) == 0
    return tmp_path


@pytest.mark.parametrize("argv,message", [
    (["quantize", "{d}/m.pt", "-o", "{d}/o.qmodel", "--calib", "{d}/nan.npy"],
     "calibration data contains NaN or infinite values"),
    (["quantize", "{d}/m.pt", "-o", "{d}/o.qmodel", "--calib", "{d}/empty.npy"], "holds no time steps"),
    (["emulate", "{d}/m.qmodel", "--input", "{d}/x.npy", "--output", "{d}/no/dir/y.npy"],
     "{d}/no/dir/y.npy: No such file or directory"),
    (["emulate", "{d}/m.qmodel", "--input", "{d}/empty.npy"], "holds no time steps"),
    (["run", "{d}/m.qmodel", "--input", "{d}/nan.npy", "--sim"], "input contains NaN or infinite values"),
    (["run", "{d}/m.pt", "--input", "{d}/x.npy", "--sim"], "not a deltarnn QModel"),
])
def test_mistakes_are_one_line(d, capsys, argv, message):
    capsys.readouterr()
    assert main([a.format(d=d) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deltarnn: error: ") and message.format(d=d) in err


def test_a_dask_scheduler_that_does_not_answer_is_one_line(monkeypatch):
    import distributed

    from deltarnn.speech.study import tasks
    from deltarnn.speech.study.config import StudyConfig

    def no_answer(address, timeout):
        raise OSError(f"Timed out trying to connect to {address} after {timeout}")

    monkeypatch.setattr(distributed, "Client", no_answer)
    cfg = StudyConfig(name="quick", scheduler="tcp://127.0.0.1:9")
    with pytest.raises(tasks.StudyError, match=r"^cannot reach the Dask scheduler at tcp://127.0.0.1:9: Timed out"):
        tasks.connect(cfg)
