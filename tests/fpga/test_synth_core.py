"""Synthesis of the whole core for the boards (deltarnn.fpga.harness, benchmarks/synth_core.py).

``make test`` builds a tiny core for the iCE40 UP5K (about two minutes): a
bitstream comes out, the weight memory is in SPRAM (which checks the single
shared address of its ports in ``hw/core.py``), every other memory in block
RAM, every multiplier but the MxV's column offset in SB_MAC16, and nextpnr
reports an Fmax. With ``DELTARNN_FULL=1`` every measured configuration is
rebuilt and compared with its record in ``benchmarks/results/synth/``: more
than 10 % more LUTs, FFs, DSPs or RAM blocks (or 15 % less Fmax) fails, as
does a configuration that stops fitting (or starts: then the record is stale).
Refresh the records with ``python benchmarks/synth_core.py``.
"""

import json
import math
from pathlib import Path

import pytest

from deltarnn.fpga.synth import STAT_FILE, SynthesisError, yosys_cells
from deltarnn.fpga.harness import (COLLISIONS_UNDEFINED, CONFIGS, ICE40_DSP_LANES, MXV_MULTS_TO_LOGIC,
                                   WEIGHTS_TO_SPRAM, build, clock_constraint, compare_with_baseline, critical_path,
                                   memory_mapping, nextpnr_utilisation, record)

from tests.conftest import FULL

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "synth"

#: Memories of a GRU core that must reach a RAM block (``c`` is unused by a GRU and removed).
GRU_MEMORIES = {"weights", "acc", "mult", "vec", "h", "ref", "dbuf"}


def _base(name):
    # "core.mult$186" -> "mult"
    return name.split(".")[-1].split("$")[0]


# --- fast checks of the helpers (no tools) -----------------------------------------------------

def test_clock_constraints():
    assert clock_constraint("icebreaker", 30) == "set_frequency clk12_0__io 30\n"
    assert clock_constraint("ulx3s-85f", 62.5) == 'FREQUENCY PORT "clk25_0__io" 62.5 MHZ;\n'
    with pytest.raises(ValueError):
        clock_constraint("de0", 50)


def test_configurations_are_consistent():
    for name, cfg in CONFIGS.items():
        p = cfg.params
        assert cfg.board in ("icebreaker", "ulx3s-85f"), name
        assert p.cell == ("lstm" if "lstm" in name else "gru") and p.wmem_bits == 4 and p.abits == 8, name
        assert cfg.yosys_script[0] == COLLISIONS_UNDEFINED, name       # every build: no old-data emulation
        if cfg.board == "icebreaker":
            assert "-spram" in cfg.synth_opts and WEIGHTS_TO_SPRAM in cfg.yosys_script, name
            # the lane products take SB_MAC16 while the UP5K's eight hold them
            assert (MXV_MULTS_TO_LOGIC in cfg.yosys_script) == (p.lanes > ICE40_DSP_LANES), name


def test_log_parsers(tmp_path):
    (tmp_path / "top.rpt").write_text(
        "mapping memory top.core.weights via $__ICE40_SPRAM_\n"
        "mapping memory top.core.mult$186 via $__ICE40_RAM4K_\n")
    assert memory_mapping(tmp_path / "top.rpt") == {"core.weights": "$__ICE40_SPRAM_",
                                                    "core.mult$186": "$__ICE40_RAM4K_"}
    (tmp_path / "top.tim").write_text(
        "Info: Device utilisation:\n"
        "Info: \t         ICESTORM_LC:    5799/   5280   109%\n"
        "Info: \t        ICESTORM_RAM:      28/     30    93%\n"
        "Info: \t         SB_WARMBOOT:       0/      1     0%\n")
    assert nextpnr_utilisation(tmp_path / "top.tim") == {
        "ICESTORM_LC": {"used": 5799, "available": 5280}, "ICESTORM_RAM": {"used": 28, "available": 30}}
    assert yosys_cells(tmp_path / STAT_FILE) == {} and critical_path(tmp_path) is None


def test_compare_with_baseline():
    base = {"config": "x", "fits": True, "luts": 1000, "ffs": 500, "dsps": 4,
            "ram_blocks": {"EBR": 20, "SPRAM": 2}, "fmax_mhz": 10.0}
    assert compare_with_baseline(dict(base), base) == []
    within = dict(base, luts=1100, ffs=550, dsps=5, ram_blocks={"EBR": 22, "SPRAM": 3}, fmax_mhz=8.6)
    assert compare_with_baseline(within, base) == []
    worse = dict(base, luts=1101, dsps=6, ram_blocks={"EBR": 23, "SPRAM": 2}, fmax_mhz=8.4)
    problems = compare_with_baseline(worse, base)
    assert len(problems) == 4 and any("luts 1101" in p for p in problems)
    assert any("ram_blocks.EBR 23" in p for p in problems) and any("Fmax" in p for p in problems)
    gone = compare_with_baseline({"config": "x", "fits": False, "error": ["no BELs"]}, base)
    assert len(gone) == 1 and "no longer" in gone[0]


# --- the smoke build (make test) ----------------------------------------------------------------

def test_smoke_build_ice40(tmp_path):
    cfg = CONFIGS["ice40-smoke"]
    p = cfg.params
    report = build(cfg, tmp_path / "smoke")

    assert report.bitstream.is_file() and report.bitstream.stat().st_size > 50_000
    assert 1000 < report.luts <= report.capacity["luts"]      # the whole core is there
    assert 500 < report.ffs
    fmax = report.fmax_mhz["cd_sync.clk"]
    assert 0 < fmax and report.constraint_mhz["cd_sync.clk"] == pytest.approx(cfg.constraint_mhz, rel=1e-3)

    mapping = memory_mapping(report.logs["yosys"])
    assert mapping["core.weights"] == "$__ICE40_SPRAM_"
    assert GRU_MEMORIES <= {_base(m) for m in mapping}
    assert all(cell == "$__ICE40_RAM4K_" for m, cell in mapping.items() if m != "core.weights")
    spram = math.ceil(p.lanes * p.wmem_bits / 16) * math.ceil(p.weight_depth / 16384)
    assert report.ram_blocks == {"SPRAM": spram, "EBR": report.cells["SB_RAM40_4K"]}
    assert 0 < report.ram_blocks["EBR"] <= report.capacity["EBR"]

    # The MxV's P lane products, the engine's requantization, its fixed-point multiply and the
    # encoder's are SB_MAC16; the MxV's column offset is logic.
    assert p.lanes <= ICE40_DSP_LANES
    assert report.dsps == report.cells["SB_MAC16"] == 3 + p.lanes

    rec = record("ice40-smoke", cfg, report.build_dir, report)
    assert rec["fits"] and rec["fmax_mhz"] == pytest.approx(fmax, abs=0.01)
    assert rec["critical_path"]["delay_ns"] == pytest.approx(1000 / fmax, rel=0.02)
    json.dumps(rec)


# --- the measured configurations (make test-all) -------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="full synthesis runs with DELTARNN_FULL=1 (make test-all)")
@pytest.mark.parametrize("name", list(CONFIGS))
def test_configuration_against_record(name, tmp_path):
    cfg = CONFIGS[name]
    baseline_path = RESULTS / f"{name}.json"
    if not baseline_path.exists():
        pytest.fail(f"no record {baseline_path}; run python benchmarks/synth_core.py --config {name}")
    baseline = json.loads(baseline_path.read_text())
    report = error = None
    try:
        report = build(cfg, tmp_path / name)
    except SynthesisError as exc:
        error = exc
    rec = record(name, cfg, tmp_path / name, report, error)
    assert rec["fits"] == cfg.expect_fit == baseline["fits"], rec.get("error")
    if not rec["fits"]:
        assert error.step == "nextpnr"
        over = {k for k, v in rec["nextpnr_utilisation"].items() if v["used"] > v["available"]}
        assert over == {k for k, v in baseline["nextpnr_utilisation"].items() if v["used"] > v["available"]}
    assert compare_with_baseline(rec, baseline) == []
