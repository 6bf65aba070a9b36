"""The study's outputs: ``study.md``, ``study.json``, the plots and the exported report inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .config import StudyConfig, goals
from .evaluate import EvalSet


def export_inputs(evalset: EvalSet, folder: Path) -> None:
    """One ``NNNN.npy`` ``(1, T, F)`` per utterance (in set order) plus ``labels.npz``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(evalset.features()):
        np.save(folder / f"{i:04d}.npy", f[None])
    np.savez(folder / "labels.npz", **{f"{i:04d}": lab for i, lab in enumerate(evalset.labels)})


def _fmt(v, spec=".1f"):
    return "–" if v is None else format(v, spec)


def table_rows(results: dict) -> list[dict]:
    """One row of figures per cell (report set, dev-chosen configuration): ``study.md``'s table, ``table`` in JSON."""
    rows = []
    for c, r in results["cells"].items():
        s = results["summary"][c]
        q = r["quantized_report"]
        rows.append({"cell": c, "float_size_kb": r["float_size_kb"], "size_kb": q["size_kb"],
                     "wbits": r["chosen"]["wbits"], "abits": r["chosen"]["abits"], "skip": r["chosen"]["skip"],
                     **s})
    return rows


def seed_claims(rows: list[dict]) -> list[dict]:
    """The seed study's qualitative ranking, checked on these rows (needs all four cells, else empty).

    LSTM best under tight error limits: the smallest quantized PER change; SRU
    smallest: the smallest quantized model; LiGRU most operations eliminated:
    the most eliminated at its chosen thresholds.
    """
    by = {r["cell"]: r for r in rows}
    if set(by) != {"lstm", "gru", "ligru", "sru"}:
        return []

    def best(key, lowest):
        vals = {c: r[key] for c, r in by.items() if r[key] is not None}
        return (min if lowest else max)(vals, key=vals.get) if vals else None

    claims = [("LSTM is best under tight error limits (smallest PER change)", "lstm",
               best("quantized_per_change", True)),
              ("SRU is the smallest model", "sru", best("size_kb", True)),
              ("LiGRU has the most operations eliminated", "ligru", best("chosen_eliminated_pct", False))]
    return [{"claim": text, "expected": cell, "found": found, "holds": found == cell} for text, cell, found in claims]


def _ci(v) -> str:
    return "" if v is None else f" [{v[0]:+.2f}, {v[1]:+.2f}]"


def _sdi(v) -> str:
    return "/".join(f"{x:.1f}" for x in v)


def markdown(results: dict) -> str:
    """``study.md``: the table, the goals met or missed, the width sweep and the report fronts."""
    cfg = StudyConfig.from_dict(results["config"])
    goal = goals(cfg)
    rows = table_rows(results)
    sel, rep = results["select"], results["report"]
    lines = [f"# Shrink and Eliminate on `{cfg.dataset}` ({cfg.name} study)", "",
             f"Every choice (widths, skipped paths, thresholds, the decoder's insertion penalty) is made on "
             f"`{sel['split']}` ({sel['utterances']} utterances, {sel['frames']} frames); the figures below are "
             f"those choices confirmed on `{rep['split']}` ({rep['utterances']} utterances, {rep['frames']} frames). "
             f"PER: decoded phone error rate in % (Viterbi, phone bigram), with substitutions / deletions / "
             f"insertions; FER: frame error rate in %; changes in points against the float model, with paired "
             f"bootstrap 95 % intervals ({cfg.bootstrap} resamples); operations are the multiply-accumulates of "
             f"every matrix-vector product (golden model). {results['date']}, {results['wall_s']:.0f} s.", "",
             "| model | float KB | quantized KB | compression % | widths w/a | skipped paths | float PER (S/D/I) | "
             "float FER | quantized PER (S/D/I) | quantized FER | PER change | eliminated % (theta 0) | "
             "chosen (theta_x, theta_h) | PER change there | FER change there | eliminated % there |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        th = "–" if r["chosen_theta"] is None else f"({r['chosen_theta'][0]}, {r['chosen_theta'][1]})"
        lines.append(
            f"| {r['cell'].upper()} | {r['float_size_kb']:.1f} | {r['size_kb']:.1f} | {r['compression_pct']:.1f} | "
            f"{r['wbits']}/{r['abits']} | {', '.join(r['skip']) or 'none'} | {r['float_per']:.2f} "
            f"({_sdi(r['float_sub_del_ins_pct'])}) | {r['float_fer']:.2f} | {r['quantized_per']:.2f} "
            f"({_sdi(r['sub_del_ins_pct'])}) | {r['quantized_fer']:.2f} | {r['quantized_per_change']:+.2f}"
            f"{_ci(r['quantized_per_change_ci'])} | {r['eliminated_theta0_pct']:.1f} | {th} | "
            f"{_fmt(r['chosen_per_change'], '+.2f')}{_ci(r['chosen_per_change_ci'])} | "
            f"{_fmt(r['chosen_fer_change'], '+.2f')}{_ci(r['chosen_fer_change_ci'])} | "
            f"{_fmt(r['chosen_eliminated_pct'])} |")
    lines += ["", f"## Goals (compression > {goal.compression.bound:g} % with PER change <= "
              f"{goal.per_change.bound:g} point for LSTM, GRU and SRU; > {goal.eliminated.bound:g} % of operations "
              f"eliminated at the point chosen on `{sel['split']}`), judged on `{rep['split']}`", ""]
    for r in rows:
        eliminated = r["chosen_eliminated_pct"]
        lines.append(
            f"- {r['cell'].upper()}: compression {r['compression_pct']:.1f} % "
            f"({goal.compression.verdict(r['compression_pct'])}), PER change {r['quantized_per_change']:+.2f}"
            f"{_ci(r['quantized_per_change_ci'])} ({goal.per_change.verdict(r['quantized_per_change'])}), "
            f"eliminated {_fmt(eliminated)} % at the chosen thresholds "
            f"({goal.eliminated.verdict(eliminated or 0.0)})")
    claims = seed_claims(rows)
    if claims:
        lines += ["", "## The seed study's ranking, on this corpus", ""]
        lines += [f"- {c['claim']}: {'holds' if c['holds'] else 'does not hold'} (here: {c['found'].upper()})"
                  for c in claims]
    lines += ["", "## Width sweep (selection set, theta 0, no skipped paths): PER change", ""]
    wb, ab = cfg.wbits, cfg.abits
    lines.append("| model | " + " | ".join(f"w{w}/a{a}" for w in wb for a in ab) + " |")
    lines.append("|---|" + "---:|" * (len(wb) * len(ab)))
    for c, r in results["cells"].items():
        lines.append(f"| {c.upper()} | " + " | ".join(f"{p['delta_per']:+.2f}" for p in r["width_sweep"]) + " |")
    lines += ["", f"## Pareto fronts on `{rep['split']}` (shown only: nothing is chosen from them)", ""]
    for c, r in results["cells"].items():
        pts = ", ".join(f"({p['theta_x']},{p['theta_h']}): {p['delta_per']:+.2f} / {p['eliminated_pct']:.1f} %"
                        for p in r["front_report"])
        lines.append(f"- {c.upper()} (theta_x,theta_h): PER change / eliminated: {pts}")
    lines += ["", "Plots: `pareto.png`, `sparsity.png`, `widths.png`; data: `study.json`; QModels: `qmodels/`.", ""]
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    """``pareto.png``, ``sparsity.png`` and ``widths.png`` in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(results["cells"])
    n = len(cells)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    for ax, c in zip(axes[0], cells):
        r = results["cells"][c]
        g = r["grid_select"]
        bs = r["float_select"]["per"]
        ax.scatter([p["eliminated_pct"] for p in g], [p["per"] - bs for p in g], s=14, c="0.6",
                   label=f"grid ({results['select']['split']})")
        fs = r["front_select"]
        ax.plot([p["eliminated_pct"] for p in fs], [p["per"] - bs for p in fs], "o-", c="C0", ms=4,
                label=f"front ({results['select']['split']})")
        fr = r["front_report"]
        ax.plot([p["eliminated_pct"] for p in fr], [p["delta_per"] for p in fr], "s--", c="C1", ms=4,
                label=f"front ({results['report']['split']})")
        cp = r["chosen_point_report"]
        if cp:
            ax.plot([cp["eliminated_pct"]], [cp["delta_per"]], "*", c="C3", ms=13, label="chosen")
        ax.axhline(results["config"]["tol"], c="k", lw=0.8, ls=":")
        ax.set_title(f"{c.upper()} w{r['chosen']['wbits']}/a{r['chosen']['abits']}")
        ax.set_xlabel("operations eliminated (%)")
        ax.set_ylabel("PER change (points)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, c in zip(axes[0], cells):
        g = results["cells"][c]["grid_select"]
        if any(p["theta_h"] for p in g):
            series = [("theta_x = theta_h", lambda p: p["theta_x"] == p["theta_h"], "theta_x"),
                      ("theta_x (theta_h = 0)", lambda p: p["theta_h"] == 0, "theta_x"),
                      ("theta_h (theta_x = 0)", lambda p: p["theta_x"] == 0, "theta_h")]
        else:
            series = [("theta_x (no h path)", lambda p: True, "theta_x")]
        for label, sel_fn, key in series:
            pts = sorted((p for p in g if sel_fn(p)), key=lambda p: p[key])
            ax.plot([p[key] for p in pts], [p["eliminated_pct"] for p in pts], "o-", ms=4, label=label)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_title(c.upper())
        ax.set_xlabel("threshold (quantization steps)")
        ax.set_ylabel("operations eliminated (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sparsity.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, c in zip(axes[0], cells):
        sw = results["cells"][c]["width_sweep"]
        for a in results["config"]["abits"]:
            pts = sorted((p for p in sw if p["abits"] == a), key=lambda p: p["wbits"])
            ax.plot([p["wbits"] for p in pts], [p["delta_per"] for p in pts], "o-", ms=4, label=f"a{a}")
        ax.axhline(results["config"]["tol"], c="k", lw=0.8, ls=":")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_title(c.upper())
        ax.set_xlabel("weight bits")
        ax.set_ylabel("PER change (points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "widths.png", dpi=110)
    plt.close(fig)


def write_outputs(results: dict, out: Path) -> None:
    """Add ``table`` to ``results``; write ``study.json``, ``study.md`` and the plots to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    results["table"] = table_rows(results)
    results["seed_claims"] = seed_claims(results["table"])
    (out / "study.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "study.md").write_text(markdown(results))
    plot(results, out)
