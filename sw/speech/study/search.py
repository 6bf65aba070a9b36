"""The study's choices, as a pure function of an ``evaluate`` callback.

:func:`search` runs, for every cell of the configuration at once:

1. the float baselines (decoded PER and FER) on the selection and the report set;
2. the width sweep: every weight width x activation width, no skipped path,
   threshold 0, on the selection set;
3. the activation width (:func:`activation_width`), then weight widths from
   the smallest up with greedy path skipping (:class:`GreedySkip`), and the
   chosen widths (:func:`choose_widths`);
4. the threshold grid on the chosen weights at every activation width from
   the chosen one up whose threshold-0 PER is within ``tol``
   (:func:`activation_candidates`: wider activations leave more of the
   tolerance to the thresholds, and their finer steps make finer
   thresholds), each grid's Pareto front (:func:`pareto_front`) and chosen
   point (:func:`choose_point`: the most operations eliminated within ``tol``
   points of the float model's PER and ``fer_tol`` points of the same
   QModel's FER at threshold 0, so that no threshold buys PER with worse
   frames); the activation width whose chosen point eliminates the most
   becomes the chosen one (ties: the narrower);
5. the report set at threshold 0 and at every point of the selection front,
   where the choices made on the selection set are confirmed; nothing is
   chosen or judged on the report set.

It asks ``evaluate(requests, stage)`` for whole batches (every request one
stage can make at once, so they can run in parallel), never for the same
request twice. A request is a :class:`FloatPoint`, a :class:`QuantPoint` or a
:class:`FootprintQuery`; ``stage`` only names the batch (for progress bars).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple

from .config import StudyConfig

#: The two evaluation sets: the one choices are made on and the one figures are reported on.
SELECT, REPORT = "select", "report"


@dataclass(frozen=True)
class FloatPoint:
    """The float model on one set; its result is a dict with ``per`` and ``fer`` (%) like a :class:`QuantPoint`'s."""

    cell: str
    split: str


@dataclass(frozen=True)
class QuantPoint:
    """One QModel of ``cell`` at given thresholds on one set.

    Its result is a dict like :func:`deltarnn.speech.study.evaluate.evaluate_qmodel`'s;
    the search reads ``per``, ``fer``, ``compression_pct``, ``eliminated_pct``,
    ``theta_x``, ``theta_h`` and the names in ``paths``. ``skip`` is kept sorted.
    """

    cell: str
    wbits: int
    abits: int
    skip: tuple[str, ...] = ()
    theta_x: int = 0
    theta_h: int = 0
    split: str = SELECT

    def __post_init__(self):
        object.__setattr__(self, "skip", tuple(sorted(self.skip)))

    def at(self, theta_x: int, theta_h: int, split: str) -> QuantPoint:
        return replace(self, theta_x=theta_x, theta_h=theta_h, split=split)

    def labels(self) -> dict:
        return {"wbits": self.wbits, "abits": self.abits, "skip": list(self.skip)}


@dataclass(frozen=True)
class FootprintQuery:
    """The :class:`~deltarnn.speech.study.evaluate.Footprint` of ``cell`` at these widths (no path skipped)."""

    cell: str
    wbits: int
    abits: int


#: ``evaluate(requests, stage) -> results``, one result per request, in order.
Evaluate = Callable[[list, str], list]


class Evaluations:
    """The results of every request made so far, each asked of ``evaluate`` once."""

    def __init__(self, evaluate: Evaluate):
        self._evaluate = evaluate
        self._results: dict = {}

    def fetch(self, requests: list, stage: str) -> None:
        todo = list(dict.fromkeys(r for r in requests if r not in self._results))
        if todo:
            self._results.update(zip(todo, self._evaluate(todo, stage)))

    def __getitem__(self, request):
        return self._results[request]

    def labelled(self, point: QuantPoint) -> dict:
        """The result of ``point`` with its widths and skipped paths."""
        return dict(self[point], **point.labels())


# --- Pareto front ---------------------------------------------------------------------


def pareto_front(points: list[dict], err: str = "per", gain: str = "eliminated_pct") -> list[int]:
    """Indices of the points no other point beats (lower ``err`` and higher ``gain``).

    A point is dominated when another has ``err <=`` and ``gain >=`` with at
    least one strict; of identical points the first is kept. Sorted by gain.
    """
    keep = []
    for i, p in enumerate(points):
        dominated = False
        for j, q in enumerate(points):
            if j == i:
                continue
            if q[err] <= p[err] and q[gain] >= p[gain] and (q[err] < p[err] or q[gain] > p[gain]):
                dominated = True
                break
            if q[err] == p[err] and q[gain] == p[gain] and j < i:
                dominated = True
                break
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: (points[i][gain], -points[i][err]))


def choose_point(points: list[dict], base_per: float, tol: float, err: str = "per",
                 gain: str = "eliminated_pct", base_fer: float | None = None, fer_tol: float = 0.0) -> int | None:
    """Index of the point with the most ``gain`` among those with ``err - base_per <= tol``.

    With ``base_fer``, a point must also keep ``fer - base_fer <= fer_tol`` (the FER guard).
    """
    ok = [i for i, p in enumerate(points) if p[err] - base_per <= tol + 1e-9
          and (base_fer is None or p["fer"] - base_fer <= fer_tol + 1e-9)]
    if not ok:
        return None
    return max(ok, key=lambda i: (points[i][gain], -points[i][err]))


# --- widths and skipped paths ----------------------------------------------------------


def activation_width(cfg: StudyConfig, per: Callable[[int, int], float]) -> int:
    """The smallest activation width within ``act_tol`` of the widest, at the widest weights.

    ``per(wbits, abits)`` is the PER without skipped paths.
    """
    wmax, amax = max(cfg.wbits), max(cfg.abits)
    ref = per(wmax, amax)
    return min([a for a in cfg.abits if per(wmax, a) - ref <= cfg.act_tol] or [amax])


@dataclass
class Candidate:
    """A weight width being improved by skipping paths (in the order they were skipped)."""

    wbits: int
    skip: tuple[str, ...]
    per: float


class GreedySkip:
    """One cell's weight widths from the smallest up, each improved by skipping one path at a time.

    A width within ``tol`` of the float PER is accepted as it is. Otherwise, on
    at most ``max_greedy`` widths whose PER change is at most
    ``greedy_max_delta``, the path whose skipping lowers the PER most is
    skipped, among those that keep the compression at or above
    ``compression_floor``, until the PER change is within ``tol`` (accepted),
    no path lowers the PER or ``skip_budget`` paths are skipped (next width).

    Parameters
    ----------
    per_at : dict of int to float
        PER at each weight width, at ``abits``, no skipped path.
    footprints : dict of int to Footprint
        Each weight width's :class:`~deltarnn.speech.study.evaluate.Footprint` at ``abits``.
    """

    def __init__(self, cfg: StudyConfig, cell: str, base: float, abits: int, per_at: dict, footprints: dict,
                 log: Callable[[str], None]):
        self.cfg, self.cell, self.base, self.abits = cfg, cell, base, abits
        self.per_at, self.footprints, self.log = per_at, footprints, log
        self.widths = sorted(cfg.wbits)
        self.tried = 0
        self.current: Candidate | None = None
        #: ``(wbits, skip)`` once a configuration is within ``tol``
        self.accepted: tuple[int, tuple[str, ...]] | None = None
        #: every configuration tried: ``{"wbits", "skip", "per", "accepted"}``
        self.trace: list[dict] = []
        self.next_width()

    def _record(self, wbits: int, skip: tuple, per: float, accepted: bool) -> None:
        self.trace.append({"wbits": wbits, "skip": list(skip), "per": per, "accepted": accepted})

    def next_width(self) -> None:
        """Accept the next width or start skipping on it; ``current`` is None when none is left."""
        while self.widths:
            w = self.widths.pop(0)
            per = self.per_at[w]
            if per - self.base <= self.cfg.tol:
                self.accepted = (w, ())
                self._record(w, (), per, True)
                return
            if self.tried >= self.cfg.max_greedy or per - self.base > self.cfg.greedy_max_delta:
                continue
            self.tried += 1
            self.current = Candidate(w, (), per)
            self._record(w, (), per, False)
            return
        self.current = None

    def paths_to_try(self) -> list[str]:
        """The paths the current width may skip next, moving on to the next widths while there are none."""
        while self.accepted is None and self.current is not None:
            cur = self.current
            fp = self.footprints[cur.wbits]
            ok = [p for p in fp.skip_bits if p not in cur.skip
                  and fp.compression_pct(cur.skip + (p,)) >= self.cfg.compression_floor]
            if ok and len(cur.skip) < self.cfg.skip_budget:
                return ok
            self.next_width()
        return []

    def point(self, path: str) -> QuantPoint:
        """The evaluation of the current width with ``path`` skipped too."""
        return QuantPoint(self.cell, self.current.wbits, self.abits, self.current.skip + (path,))

    def take(self, pers: dict[str, float]) -> None:
        """Skip the path whose skipping gave the lowest PER, given the PER for each path of :meth:`paths_to_try`."""
        cur = self.current
        best = min(pers, key=pers.get)
        for p, per in pers.items():
            self._record(cur.wbits, cur.skip + (p,), per, False)
        if pers[best] >= cur.per:
            self.log(f"{self.cell}: w{cur.wbits}a{self.abits}: no path recovers PER; next width")
            self.next_width()
            return
        cur.skip += (best,)
        cur.per = pers[best]
        self.log(f"{self.cell}: w{cur.wbits}a{self.abits}: skip {'+'.join(cur.skip)} -> PER change "
                 f"{cur.per - self.base:+.2f}")
        if cur.per - self.base <= self.cfg.tol:
            self.accepted = (cur.wbits, cur.skip)
            self._record(cur.wbits, cur.skip, cur.per, True)


def skip_greedily(cfg: StudyConfig, ev: Evaluations, greedy: dict[str, GreedySkip]) -> None:
    """Run every cell's :class:`GreedySkip` to its end, one batch of evaluations per round."""
    rnd = 0
    while True:
        tries = {c: greedy[c].paths_to_try() for c in cfg.cells}
        requests = [greedy[c].point(p) for c in cfg.cells for p in tries[c]]
        if not requests:
            return
        rnd += 1
        ev.fetch(requests, f"greedy skip round {rnd}")
        for c in cfg.cells:
            if tries[c]:
                greedy[c].take({p: ev[greedy[c].point(p)]["per"] for p in tries[c]})


class Option(NamedTuple):
    """A configuration within ``tol``: weight width, skipped paths, its selection-set result."""

    wbits: int
    skip: tuple[str, ...]
    result: dict


def choose_widths(cfg: StudyConfig, ev: Evaluations, g: GreedySkip, log: Callable[[str], None]
                  ) -> tuple[QuantPoint, dict]:
    """The chosen widths of one cell and their record (``options_within_tol``, ``chosen``, ``greedy_trace``).

    Every configuration within ``tol`` is an option: the greedy result and any
    width that needs no skipping; the most compressed wins (ties: fewer skipped
    paths, then fewer bits). With none, the widest pair without skips is taken
    (``fallback``).
    """
    options = []
    if g.accepted is not None:
        w, skip = g.accepted
        options.append(Option(w, skip, ev[QuantPoint(g.cell, w, g.abits, skip)]))
    for w in cfg.wbits:
        r = ev[QuantPoint(g.cell, w, g.abits)]
        if r["per"] - g.base <= cfg.tol and not (options and options[0][:2] == (w, ())):
            options.append(Option(w, (), r))
    if options:
        w, skip, _ = max(options, key=lambda o: (round(o.result["compression_pct"], 9), -len(o.skip), -o.wbits))
        abits = g.abits
    else:
        w, skip, abits = max(cfg.wbits), (), max(cfg.abits)
    point = QuantPoint(g.cell, w, abits, skip)
    log(f"{g.cell}: chosen w{w} a{abits} skip [{' '.join(skip)}]")
    return point, {
        "options_within_tol": [{"wbits": o.wbits, "skip": list(o.skip), "compression_pct": o.result["compression_pct"],
                                "per": o.result["per"]} for o in options],
        "chosen": {"wbits": w, "abits": abits, "skip": list(skip), "fallback": not options,
                   "select": ev.labelled(point)},
        "greedy_trace": g.trace}


# --- thresholds -------------------------------------------------------------------------


def threshold_grid(cfg: StudyConfig, point: QuantPoint, paths) -> list[QuantPoint]:
    """Every ``(theta_x, theta_h)`` of the configuration on the selection set (theta_x only without h paths)."""
    thetas_h = cfg.thetas_h if any(p.endswith(".h") for p in paths) else [0]
    return [point.at(tx, th, SELECT) for tx in cfg.thetas_x for th in thetas_h]


def front_and_choice(points: list[dict], base_per: float, base_fer: float, cfg: StudyConfig
                     ) -> tuple[list[dict], dict | None]:
    """The Pareto front of ``points`` and its point with the most eliminated within the tolerances.

    ``base_per`` is the float model's PER on the same set (the PER change may
    be at most ``tol``); ``base_fer`` the quantized model's FER at threshold 0
    (what the thresholds may add to it is at most ``fer_tol``).
    """
    front = [points[i] for i in pareto_front(points)]
    k = choose_point(front, base_per, cfg.tol, base_fer=base_fer, fer_tol=cfg.fer_tol)
    return front, (front[k] if k is not None else None)


def report_points(point: QuantPoint, front_select: list[dict]) -> list[QuantPoint]:
    """Threshold 0 and every point of the selection front, on the report set."""
    todo = {(0, 0)} | {(p["theta_x"], p["theta_h"]) for p in front_select}
    return [point.at(tx, th, REPORT) for tx, th in sorted(todo)]


def at_thetas(points: list[dict], theta_x: int, theta_h: int) -> dict:
    return next(p for p in points if (p["theta_x"], p["theta_h"]) == (theta_x, theta_h))


# --- the search ---------------------------------------------------------------------------


@dataclass
class CellResult:
    """What the search found for one cell."""

    #: the float model's result (``per``, ``fer``, ...) on the selection and the report set
    float_eval: dict[str, dict]
    #: the chosen widths and skipped paths (threshold 0, selection set)
    widths: QuantPoint
    #: ``width_sweep``, ``options_within_tol``, ``chosen``, ``greedy_trace``
    selection: dict = field(default_factory=dict)
    #: ``grid_select``, ``front_select``, ``chosen_point_select``, ``report_points``, ``quantized_report``,
    #: ``chosen_point_report``, ``front_report`` (shown, never chosen from)
    thresholds: dict = field(default_factory=dict)


def float_baselines(cfg: StudyConfig, ev: Evaluations, log: Callable[[str], None]) -> dict[str, dict[str, dict]]:
    """Each cell's float result on the selection and the report set."""
    ev.fetch([FloatPoint(c, s) for c in cfg.cells for s in (SELECT, REPORT)], "float PER")
    base = {c: {s: ev[FloatPoint(c, s)] for s in (SELECT, REPORT)} for c in cfg.cells}
    for c in cfg.cells:
        sel, rep = base[c][SELECT], base[c][REPORT]
        log(f"{c}: float PER / FER {cfg.select_split} {sel['per']:.2f} / {sel['fer']:.2f} %, "
            f"{cfg.report_split} {rep['per']:.2f} / {rep['fer']:.2f} %")
    return base


def select_widths(cfg: StudyConfig, ev: Evaluations, base: dict, log: Callable[[str], None]) -> dict[str, CellResult]:
    """Steps 2 and 3: the width sweep, the activation width, greedy skipping and the chosen widths."""
    sweep = {c: [QuantPoint(c, w, a) for w in cfg.wbits for a in cfg.abits] for c in cfg.cells}
    ev.fetch([q for c in cfg.cells for q in sweep[c]], "width sweep")
    abits = {c: activation_width(cfg, lambda w, a: ev[QuantPoint(c, w, a)]["per"]) for c in cfg.cells}
    ev.fetch([FootprintQuery(c, w, abits[c]) for c in cfg.cells for w in cfg.wbits], "quantize")
    greedy = {}
    for c in cfg.cells:
        per_at = {w: ev[QuantPoint(c, w, abits[c])]["per"] for w in cfg.wbits}
        footprints = {w: ev[FootprintQuery(c, w, abits[c])] for w in cfg.wbits}
        greedy[c] = GreedySkip(cfg, c, base[c][SELECT]["per"], abits[c], per_at, footprints, log)
    skip_greedily(cfg, ev, greedy)
    found = {}
    for c in cfg.cells:
        widths, record = choose_widths(cfg, ev, greedy[c], log)
        width_sweep = [dict(ev.labelled(q), delta_per=ev[q]["per"] - base[c][SELECT]["per"]) for q in sweep[c]]
        found[c] = CellResult(base[c], widths, {"width_sweep": width_sweep, **record})
    return found


def wider_activations(cfg: StudyConfig, point: QuantPoint) -> list[QuantPoint]:
    """``point`` at every activation width of the configuration wider than its own, narrowest first."""
    return [replace(point, abits=a) for a in sorted(cfg.abits) if a > point.abits]


def activation_candidates(cfg: StudyConfig, ev: Evaluations, r: CellResult) -> list[QuantPoint]:
    """The chosen weights and skipped paths at the chosen activation width and every wider one whose
    threshold-0 PER (selection set, evaluated already) is within ``tol`` of the float model's."""
    return [r.widths] + [q for q in wider_activations(cfg, r.widths)
                         if ev[q]["per"] - r.float_eval[SELECT]["per"] <= cfg.tol + 1e-9]


class ActivationOption(NamedTuple):
    """One activation width's threshold grid on the selection set: its QModel, grid, front and chosen point."""

    point: QuantPoint
    grid: list[dict]
    front: list[dict]
    chosen: dict | None

    def eliminated(self) -> float:
        return self.chosen["eliminated_pct"] if self.chosen else -1.0


def select_thresholds(cfg: StudyConfig, ev: Evaluations, found: dict[str, CellResult],
                      log: Callable[[str], None] = lambda msg: None) -> None:
    """Step 4: the threshold grids of each cell's activation candidates, their fronts and chosen points.

    The candidate whose chosen point eliminates the most replaces ``widths``
    (ties, or no point within the tolerances anywhere: the narrowest). Its grid,
    front and point are ``grid_select``, ``front_select`` and
    ``chosen_point_select``; ``activation_options`` records every candidate's.
    """
    ev.fetch([q for r in found.values() for q in wider_activations(cfg, r.widths)], "wider activations")
    cands = {c: activation_candidates(cfg, ev, r) for c, r in found.items()}
    grid = {(c, q.abits): threshold_grid(cfg, q, ev[q]["paths"]) for c in found for q in cands[c]}
    ev.fetch([q for g in grid.values() for q in g], "threshold grid")
    for c, r in found.items():
        options = []
        for q in cands[c]:
            points = [ev[p] for p in grid[c, q.abits]]
            front, chosen = front_and_choice(points, r.float_eval[SELECT]["per"], at_thetas(points, 0, 0)["fer"], cfg)
            options.append(ActivationOption(q, points, front, chosen))
        q, points, front, chosen = max(options, key=lambda o: (o.eliminated(), -o.point.abits))
        if q != r.widths:
            r.widths = q
            r.selection["chosen"].update(abits=q.abits, select=ev.labelled(q))
        r.selection["activation_options"] = [
            {"abits": o.point.abits, "per": ev[o.point]["per"], "fer": ev[o.point]["fer"],
             "chosen_point": None if o.chosen is None else
             {k: o.chosen[k] for k in ("theta_x", "theta_h", "per", "fer", "eliminated_pct")}} for o in options]
        if chosen:
            log(f"{c}: thresholds chosen at a{q.abits}: ({chosen['theta_x']}, {chosen['theta_h']}), eliminated "
                f"{chosen['eliminated_pct']:.1f} %, PER change {chosen['per'] - r.float_eval[SELECT]['per']:+.2f}")
        r.thresholds.update(grid_select=points, front_select=front, chosen_point_select=chosen)


def report(cfg: StudyConfig, ev: Evaluations, found: dict[str, CellResult], log: Callable[[str], None]) -> None:
    """Step 5: threshold 0 and the selection front on the report set, with the report set's own front."""
    todo = {c: report_points(r.widths, r.thresholds["front_select"]) for c, r in found.items()}
    ev.fetch([q for c in found for q in todo[c]], "report set")
    for c, r in found.items():
        b = r.float_eval[REPORT]
        points = [dict(ev[q], delta_per=ev[q]["per"] - b["per"], delta_fer=ev[q]["fer"] - b["fer"]) for q in todo[c]]
        q0 = at_thetas(points, 0, 0)
        cp = r.thresholds["chosen_point_select"]
        r.thresholds.update(report_points=points, quantized_report=q0,
                            chosen_point_report=at_thetas(points, cp["theta_x"], cp["theta_h"]) if cp else None,
                            front_report=[points[i] for i in pareto_front(points)])
        log(f"{c}: {cfg.report_split}: quantized PER change {q0['delta_per']:+.2f}, compression "
            f"{q0['compression_pct']:.1f} %, eliminated at theta 0 {q0['eliminated_pct']:.1f} %")


def search(cfg: StudyConfig, evaluate: Evaluate, log: Callable[[str], None] = lambda msg: None
           ) -> dict[str, CellResult]:
    """Choose widths, skipped paths and thresholds for every cell of ``cfg`` (see the module docstring).

    Parameters
    ----------
    evaluate : callable
        ``evaluate(requests, stage) -> results``, one result per request, in order.
    log : callable, optional
        Receives one line per finding.

    Returns
    -------
    dict of str to CellResult
        By cell, in ``cfg.cells`` order.
    """
    ev = Evaluations(evaluate)
    found = select_widths(cfg, ev, float_baselines(cfg, ev, log), log)
    select_thresholds(cfg, ev, found, log)
    report(cfg, ev, found, log)
    return found
