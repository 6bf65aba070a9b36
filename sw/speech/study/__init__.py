"""The speech study: "Shrink and Eliminate" on this project's golden model.

For each cell type (LSTM, GRU, LiGRU, SRU) on a phone-recognition corpus:

1. a float model (trained here with :func:`deltarnn.speech.train.train_speech` unless a
   trained ``CELL.pt`` is given) and its phone error rate (PER);
2. post-training quantization at every weight width x activation width of
   the configuration, each evaluated with the golden model at threshold 0;
3. the chosen widths: the smallest activation width that costs at most
   ``act_tol`` points over the widest, then weight widths from the smallest
   up, each with a greedy choice of paths left at 16 bits (skip the path
   whose restoration lowers the PER most, while the compression stays above
   ``compression_floor``) until the PER change is at most ``tol`` points;
4. a grid of delta thresholds ``(theta_x, theta_h)`` on the chosen QModel
   and on the same weights at every wider activation width still within
   ``tol`` at threshold 0, the Pareto fronts of PER against eliminated
   operations, and the chosen point: the most operations eliminated with a
   PER change of at most ``tol`` points (and at most ``fer_tol`` points of
   FER over the same QModel at threshold 0); its activation width becomes
   the chosen one.

Selection (widths, skipped paths, Pareto front, chosen point) uses the
``select_split`` (dev); the figures reported use the ``report_split`` (test).

- :mod:`~deltarnn.speech.study.config`: :class:`StudyConfig`, its presets
  (:func:`study_config`) and the goals;
- :mod:`~deltarnn.speech.study.evaluate`: evaluation sets and one evaluation
  of a QModel (PER, exact operation counts over real frames, size);
- :mod:`~deltarnn.speech.study.search`: the choices of steps 2-4 as a pure
  function of an ``evaluate`` callback;
- :mod:`~deltarnn.speech.study.tasks`: the Dask tasks and the callback that
  runs them;
- :mod:`~deltarnn.speech.study.output`: ``study.md``, ``study.json``, the plots, the exported inputs;
- :mod:`~deltarnn.speech.study.driver`: :func:`run_study`, all of it in order.

See ``docs/study.md``.
"""

from .config import StudyConfig, StudyError, study_config
from .driver import run_study
from .evaluate import EvalSet, evaluate_qmodel, make_evalset, masked_stats
from .output import export_inputs
from .search import choose_point, pareto_front, search

__all__ = ["EvalSet", "StudyConfig", "StudyError", "choose_point", "evaluate_qmodel", "export_inputs",
           "make_evalset", "masked_stats", "pareto_front", "run_study", "search", "study_config"]
