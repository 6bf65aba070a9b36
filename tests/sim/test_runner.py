"""Tests of deltarnn.sim.verilog (Verilog export) and deltarnn.sim.runner (cocotb under Verilator/Icarus).

This file is also the cocotb test module: the simulator imports it by path and
runs the ``@cocotb.test`` functions below (their names do not start with
``test_``, so pytest leaves them alone).
"""

import json
import os
import shutil
from pathlib import Path

import cocotb
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from deltarnn.sim import runner
from deltarnn.sim.verilog import to_verilog, write_verilog

THIS_FILE = Path(__file__)


class Counter(wiring.Component):
    """Counts clock cycles while ``en`` is high.

    Members
    -------
    en : In(1)
    count : Out(width)
    """

    def __init__(self, width=8):
        self.width = width
        super().__init__({"en": In(1), "count": Out(width)})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        return m


# --- cocotb tests (run inside the simulator) --------------------------------------

async def _reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.en.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def counter_counts(dut):
    await _reset(dut)
    assert int(dut.count.value) == 0
    width = len(dut.count)
    # run_cocotb(extra_env=...) reaches the simulation (and beats the inherited value).
    assert width == int(os.environ.get("COUNTER_TB_WIDTH", width))
    dut.en.value = 1
    await ClockCycles(dut.clk, 10)
    await FallingEdge(dut.clk)
    assert int(dut.count.value) == 10 % 2 ** width
    dut.en.value = 0
    await ClockCycles(dut.clk, 5)
    assert int(dut.count.value) == 10 % 2 ** width
    dut.en.value = 1
    await ClockCycles(dut.clk, 2 ** width)          # wraps around
    await FallingEdge(dut.clk)
    assert int(dut.count.value) == 10 % 2 ** width


@cocotb.test()
async def counter_deliberate_failure(dut):
    await _reset(dut)
    dut.en.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    assert int(dut.count.value) == 4, f"deliberate failure: count is {int(dut.count.value)}"


# --- pytest tests ------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim_cache(tmp_path_factory):
    """One build cache for this module, so its tests share the Verilator build."""
    return tmp_path_factory.mktemp("sim_cache")


def test_write_verilog_only_on_change(tmp_path):
    path = tmp_path / "rtl" / "counter.v"
    first = write_verilog(Counter(8), path, name="counter")
    assert first.changed and first.path == path and first.name == "counter"
    text = path.read_text()
    assert "module counter(" in text and "output [7:0] count;" in text
    assert "src =" not in text                      # no source locations by default
    mtime = path.stat().st_mtime_ns
    again = write_verilog(Counter(8), path, name="counter")
    assert not again.changed and path.stat().st_mtime_ns == mtime
    wider = write_verilog(Counter(9), path, name="counter")
    assert wider.changed and "output [8:0] count;" in path.read_text()
    assert "src =" in to_verilog(Counter(8), name="counter", emit_src=True)


def test_build_dir_for_keys():
    a = runner.build_dir_for("counter", {"width": 8}, cache_root="/c")
    assert a == runner.build_dir_for("counter", {"width": 8}, cache_root="/c")
    assert a.parent == Path("/c/verilator") and a.name.startswith("counter-")
    assert a != runner.build_dir_for("counter", {"width": 9}, cache_root="/c")
    assert a != runner.build_dir_for("counter", {"width": 8}, parameters={"N": 1}, cache_root="/c")
    assert runner.build_dir_for("counter", cache_root="/c") == Path("/c/verilator/counter")
    assert runner.build_dir_for("counter", waves="fst", cache_root="/c").name == "counter-fst"
    assert runner.build_dir_for("counter", simulator="icarus", cache_root="/c").parent.name == "icarus"


def test_counter_passes_under_verilator(sim_cache, monkeypatch):
    monkeypatch.setenv("COUNTER_TB_WIDTH", "99")
    results = runner.run_component(Counter(8), THIS_FILE, toplevel="counter",
                                   build_key={"width": 8}, testcase="counter_counts",
                                   cache_root=sim_cache, seed=1234,
                                   extra_env={"COUNTER_TB_WIDTH": "8"})
    assert results.is_file()
    assert runner.check_results(results) == (1, 0)
    assert 'name="random_seed" value="1234"' in results.read_text()
    assert os.environ["COUNTER_TB_WIDTH"] == "99"       # the caller's environment is restored
    parsed = runner.parse_results(results)
    assert [(t.name, t.status) for t in parsed.testcases] == [("counter_counts", "passed")]
    assert results.with_suffix("").with_suffix(".log").is_file()


def test_failing_cocotb_test_is_reported(sim_cache):
    results = runner.run_component(Counter(8), THIS_FILE, toplevel="counter",
                                   build_key={"width": 8}, cache_root=sim_cache)
    parsed = runner.parse_results(results)
    assert (parsed.passed, parsed.failed) == (1, 1)
    failure = parsed.failures[0]
    assert failure.name == "counter_deliberate_failure"
    assert "deliberate failure: count is 3" in failure.message
    assert "AssertionError" in failure.details
    with pytest.raises(runner.CocotbTestFailure,
                       match=r"(?s)1 of 2 cocotb tests failed.*deliberate failure: count is 3") as info:
        runner.check_results(results)
    assert info.value.results.failed == 1


def test_rebuild_is_skipped_when_nothing_changed(sim_cache, tmp_path):
    source = write_verilog(Counter(4), tmp_path / "counter4.v", name="counter").path
    key = {"test": "stamp"}
    first = runner.build([source], "counter", build_key=key, cache_root=sim_cache)
    assert first.rebuilt
    stamp = json.loads((first.build_dir / ".deltarnn-build.json").read_text())
    assert stamp["digest"] == first.digest
    assert stamp["manifest"]["build_args"][0] == "-Wno-fatal"

    second = runner.build([source], "counter", build_key=key, cache_root=sim_cache)
    assert not second.rebuilt and second.digest == first.digest
    assert second.build_dir == first.build_dir

    # Unchanged export: the file is not rewritten, the build still reused.
    assert not write_verilog(Counter(4), source, name="counter").changed
    assert not runner.build([source], "counter", build_key=key, cache_root=sim_cache).rebuilt

    # Changed Verilog or changed arguments: rebuilt in the same directory.
    assert write_verilog(Counter(5), source, name="counter").changed
    third = runner.build([source], "counter", build_key=key, cache_root=sim_cache)
    assert third.rebuilt and third.build_dir == first.build_dir and third.digest != first.digest
    fourth = runner.build([source], "counter", build_key=key, cache_root=sim_cache,
                          extra_args=["--x-assign", "unique", "--x-initial", "unique"])
    assert fourth.rebuilt and fourth.digest != third.digest
    results = runner.run_cocotb([source], "counter", THIS_FILE, build_key=key,
                                cache_root=sim_cache, testcase="counter_counts",
                                extra_args=["--x-assign", "unique", "--x-initial", "unique"],
                                plusargs=["+verilator+rand+reset+2", "+verilator+seed+7"])
    assert runner.check_results(results) == (1, 0)


def test_waves_are_recorded(sim_cache):
    results = runner.run_component(Counter(3), THIS_FILE, toplevel="counter",
                                   build_key={"width": 3}, testcase="counter_counts",
                                   cache_root=sim_cache, waves=True)
    assert runner.check_results(results) == (1, 0)
    fmt = "fst" if runner.fst_supported() else "vcd"
    assert results.parent.name.endswith(f"-{fmt}")
    waves = results.parent / f"test_runner.counter_counts.{fmt}"
    assert waves.is_file() and waves.stat().st_size > 0


def test_build_error_names_log(sim_cache, tmp_path):
    broken = tmp_path / "broken.v"
    broken.write_text("module broken(input a, output b);\n  assign b = a +;\nendmodule\n")
    with pytest.raises(runner.SimulationError, match=r"(?s)verilator build of 'broken' failed.*see .*build\.log") as info:
        runner.build([broken], "broken", cache_root=sim_cache)
    assert info.value.log.is_file()
    assert not (info.value.log.parent / ".deltarnn-build.json").exists()


def test_missing_test_module_is_an_error(sim_cache):
    with pytest.raises(runner.SimulationError, match="ended without results"):
        runner.run_component(Counter(8), "no_such_cocotb_module", toplevel="counter",
                             build_key={"width": 8}, cache_root=sim_cache)


def test_icarus_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(runner.SimulatorNotFound, match="iverilog.*Icarus Verilog"):
        runner.build([tmp_path / "x.v"], "x", simulator="icarus", cache_root=tmp_path)


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog (Icarus Verilog) is not installed")
def test_counter_passes_under_icarus(sim_cache):
    results = runner.run_component(Counter(8), THIS_FILE, toplevel="counter",
                                   build_key={"width": 8}, testcase="counter_counts",
                                   simulator="icarus", cache_root=sim_cache)
    assert runner.check_results(results) == (1, 0)
