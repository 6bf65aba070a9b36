#!/usr/bin/env python3
"""Resource use and Fmax of the accelerator core on the iCEBreaker (iCE40 UP5K) and ULX3S (ECP5 85F).

Builds every configuration of :data:`deltarnn.fpga.harness.CONFIGS` for the chosen
board(s) (Yosys, nextpnr, icepack / ecppack, through :func:`deltarnn.fpga.harness.build`:
the core inside the measurement harness :class:`deltarnn.fpga.harness.SynthTop`) and
writes one JSON record per configuration to ``benchmarks/results/synth/``:
LUT / FF / DSP / RAM use, nextpnr's Fmax and critical path, the memory
mapping Yosys chose and the build times. A configuration that does not fit
(place and route fails for want of resources) is recorded too, with what it
asks for. ``tests/fpga/test_synth_core.py`` compares fresh builds with these
records (``DELTARNN_FULL=1``).

Usage::

    python benchmarks/synth_core.py [--board icebreaker|ulx3s-85f|all] [--config NAME ...]

Builds run one after another (never two place-and-routes at once); the large
ECP5 configurations take tens of minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from deltarnn.fpga.harness import CONFIGS, build, compare_with_baseline, record
from deltarnn.fpga.synth import SynthesisError

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results" / "synth"
BOARD_NAMES = ("icebreaker", "ulx3s-85f")


def _git_state() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--", "hw", "sw") or ""    # "XY path" per line
    return {"commit": commit.strip() if commit else None,
            "dirty": sorted(line[3:] for line in dirty.splitlines() if line.strip())}


def _row(rec: dict) -> str:
    if not rec.get("fits"):
        util = rec.get("nextpnr_utilisation", {})
        over = ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in util.items()
                         if v["used"] > v["available"])
        return (f"| {rec['config']} | {rec['description']} | does not fit: {over or rec.get('error')} "
                "| | | | |")
    cap = rec["capacity"]
    ram = ", ".join(f"{k} {n}/{cap.get(k, '?')}" for k, n in rec["ram_blocks"].items())
    return (f"| {rec['config']} | {rec['description']} | {rec['luts']}/{cap['luts']} | {rec['ffs']}/{cap['ffs']} "
            f"| {rec['dsps']}/{cap['dsps']} | {ram} | {rec['fmax_mhz']:.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", choices=[*BOARD_NAMES, "all"], default="all")
    parser.add_argument("--config", nargs="*", choices=sorted(CONFIGS), help="only these configurations")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build" / "synth",
                        help="where the builds go (one subdirectory per configuration)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON records go")
    parser.add_argument("--dry-run", action="store_true", help="list the configurations and exit")
    args = parser.parse_args(argv)

    boards = BOARD_NAMES if args.board == "all" else (args.board,)
    names = [n for n, c in CONFIGS.items() if c.board in boards and (not args.config or n in args.config)]
    if args.dry_run:
        for n in names:
            print(n, CONFIGS[n].description)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    git = _git_state()
    rows, regressions, surprises = [], [], []
    for name in names:
        config = CONFIGS[name]
        build_dir = args.build_dir / name
        print(f"[synth_core] {name}: {config.description} ...", flush=True)
        t0 = time.monotonic()
        report = error = None
        try:
            report = build(config, build_dir)
        except SynthesisError as exc:
            error = exc
        rec = record(name, config, build_dir, report, error)
        rec["wall_s"] = round(time.monotonic() - t0, 1)
        rec["command"] = f"python benchmarks/synth_core.py --config {name}"
        rec["source"] = git
        if rec["fits"] != config.expect_fit:
            surprises.append(f"{name}: expected {'to fit' if config.expect_fit else 'not to fit'}, "
                             f"{'fits' if rec['fits'] else 'does not fit'}")
        out = args.out / f"{name}.json"
        if out.exists():
            regressions += compare_with_baseline(rec, json.loads(out.read_text()))
        out.write_text(json.dumps(rec, indent=2) + "\n")
        rows.append(_row(rec))
        print(f"[synth_core] {name}: {'fits' if rec['fits'] else 'does not fit'} in {rec['wall_s']:.0f} s "
              f"-> {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}", flush=True)

    print()
    print("| config | core | LUT | FF | DSP | RAM | Fmax (MHz) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    for line in regressions:
        print("regression against the previous record:", line)
    for line in surprises:
        print("unexpected:", line)
    return 1 if surprises else 0


if __name__ == "__main__":
    sys.exit(main())
