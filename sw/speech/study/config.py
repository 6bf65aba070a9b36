"""The study's configuration, its three presets and the goals it is judged by."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from deltarnn.spec.cells import CELLS
from deltarnn.spec.contract import check_bits


class StudyError(ValueError):
    """Bad study options (shown as a one-line error by the CLI)."""


@dataclass
class StudyConfig:
    """Every choice of one study: corpus, models, widths, thresholds, goals and execution.

    ``tol`` (points of PER), ``compression_floor`` (%) and ``eliminated_goal``
    (%) are both the selection's constraints and the goals ``study.md``
    reports against (:func:`goals`); ``fer_tol`` (points of FER) guards the
    threshold choice. Choices are made on ``select_split`` (dev) and
    confirmed on ``report_split`` (test), with ``bootstrap`` resamples for
    the 95 % intervals of every change reported.
    """

    name: str = "full"
    dataset: str = "espeak"
    out: str = "benchmarks/results/study"
    cells: list[str] = field(default_factory=lambda: list(CELLS))
    models_dir: str | None = None
    # training of missing models
    layers: int = 2
    hidden: int = 128
    epochs: int = 20
    batch: int = 16
    lr: float = 2e-3
    #: output delay (frames of lookahead) of the models trained here
    delay: int = 3
    max_train_utts: int | None = None
    # quantization
    wbits: list[int] = field(default_factory=lambda: [2, 3, 4, 6, 8])
    abits: list[int] = field(default_factory=lambda: [4, 6, 8])
    tol: float = 1.0
    fer_tol: float = 1.0
    act_tol: float = 0.5
    compression_floor: float = 85.0
    #: goal for the operations eliminated on the report front within ``tol`` (%)
    eliminated_goal: float = 50.0
    skip_budget: int = 3
    max_greedy: int = 3
    #: greedy skipping is tried only where the PER change without skips is at most this (points)
    greedy_max_delta: float = 10.0
    calib_utts: int = 64
    # thresholds
    thetas_x: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8, 16])
    thetas_h: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8, 16])
    # evaluation sets
    select_split: str = "dev"
    select_utts: int | None = None
    report_split: str = "test"
    report_utts: int | None = None
    eval_batch: int = 24
    bootstrap: int = 1000
    export_inputs: bool = False
    # execution
    workers: int = 2
    scheduler: str | None = None
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> StudyConfig:
        """The configuration stored as ``config`` in ``study.json`` (missing fields take their defaults)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def check(self) -> None:
        """Raise :class:`StudyError` for cells or widths the project does not have."""
        bad = [c for c in self.cells if c not in CELLS]
        if bad:
            raise StudyError(f"unknown cell(s) {', '.join(bad)}; choose from {', '.join(CELLS)}")
        for name, widths in (("weight width", self.wbits), ("activation width", self.abits)):
            if not widths:
                raise StudyError(f"no {name} to study")
            for bits in widths:
                check_bits(name, bits, StudyError)


def study_config(quick: bool = False, tiny: bool = False, dataset: str | None = None, out: str | None = None,
                 cells=None, models=None, workers: int = 2, scheduler: str | None = None,
                 epochs: int | None = None, hidden: int | None = None, layers: int | None = None) -> StudyConfig:
    """The full, ``--quick`` or tiny (test-suite) configuration, with the command line's overrides.

    Raises
    ------
    StudyError
        For options that exclude each other, an unknown corpus or cell, or a missing models folder.
    """
    from deltarnn.speech.datasets import DATASETS

    if quick and tiny:
        raise StudyError("--quick and --tiny exclude each other")
    if tiny:
        cfg = StudyConfig(name="tiny", dataset="espeak-tiny", out="benchmarks/results/study-tiny",
                          layers=1, hidden=8, epochs=2, batch=8, lr=1e-2, wbits=[2, 4], abits=[6, 8],
                          skip_budget=1, max_greedy=1, greedy_max_delta=1000.0, calib_utts=8, thetas_x=[0, 2],
                          thetas_h=[0, 4], select_utts=None, eval_batch=4, export_inputs=True,
                          compression_floor=0.0, delay=1, bootstrap=50)
    elif quick:
        cfg = StudyConfig(name="quick", out="benchmarks/results/study-quick", layers=2, hidden=32, epochs=2,
                          max_train_utts=400, wbits=[3, 4, 8], abits=[6, 8], skip_budget=2, max_greedy=2,
                          calib_utts=32, thetas_x=[0, 2, 8], thetas_h=[0, 2, 8], select_utts=40,
                          report_utts=64)
    else:
        cfg = StudyConfig()
    if dataset is not None:
        if dataset.lower() not in DATASETS:
            raise StudyError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
        cfg.dataset = dataset.lower()
    if out is not None:
        cfg.out = str(out)
    if cells:
        cfg.cells = list(dict.fromkeys(cells))
    cfg.models_dir = str(models) if models is not None else None
    if cfg.models_dir is not None and not Path(cfg.models_dir).is_dir():
        raise StudyError(f"--models {cfg.models_dir}: no such folder")
    cfg.workers = workers
    cfg.scheduler = scheduler
    for name, v in (("epochs", epochs), ("hidden", hidden), ("layers", layers)):
        if v is not None:
            setattr(cfg, name, v)
    cfg.check()
    return cfg


# --- goals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A figure that must exceed ``bound`` or, with ``at_most``, stay at or below it."""

    bound: float
    at_most: bool = False
    #: decimals of the shortfall in :meth:`verdict`
    decimals: int = 1

    def shortfall(self, value: float) -> float:
        """Points by which ``value`` misses the bound (negative or zero where it is met)."""
        return value - self.bound if self.at_most else self.bound - value

    def met(self, value: float) -> bool:
        short = self.shortfall(value)
        return short <= 1e-9 if self.at_most else short < 0

    def verdict(self, value: float) -> str:
        """``met`` or ``missed by X points``."""
        return "met" if self.met(value) else f"missed by {self.shortfall(value):.{self.decimals}f} points"


@dataclass(frozen=True)
class Goals:
    """The study's goals for each cell, from its configuration."""

    #: compression (%) of the chosen QModel: above ``compression_floor``
    compression: Goal
    #: PER change (points) of the chosen QModel at threshold 0: at most ``tol``
    per_change: Goal
    #: operations eliminated (%) at the point chosen on the selection set, confirmed on the report set:
    #: above ``eliminated_goal``
    eliminated: Goal


def goals(cfg: StudyConfig) -> Goals:
    """The goals that ``cfg`` sets."""
    return Goals(compression=Goal(cfg.compression_floor), per_change=Goal(cfg.tol, at_most=True, decimals=2),
                 eliminated=Goal(cfg.eliminated_goal))
