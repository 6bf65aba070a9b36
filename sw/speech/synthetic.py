"""A small synthetic sequence-labelling task that trains in seconds.

Sequences are runs of "phones": each class has a mean feature vector, each
run lasts a random number of frames, and frames are that mean plus a slowly
drifting offset and noise. The label of a frame is its run's class. Inputs
change little within a run, which is what delta networks exploit.
"""

from __future__ import annotations

import numpy as np


def make_task(n_seqs: int, steps: int, features: int = 8, classes: int = 6, seed: int = 0,
              noise: float = 0.8, min_run: int = 3, max_run: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Return ``x`` float32 ``(n_seqs, steps, features)`` and labels int64 ``(n_seqs, steps)``."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(1234).normal(0.0, 1.0, size=(classes, features))
    x = np.empty((n_seqs, steps, features), dtype=np.float32)
    y = np.empty((n_seqs, steps), dtype=np.int64)
    for s in range(n_seqs):
        t = 0
        while t < steps:
            run = int(rng.integers(min_run, max_run + 1))
            y[s, t:t + run] = rng.integers(classes)
            t += run
        drift = np.cumsum(rng.normal(0.0, 0.02, size=(steps, features)), axis=0)
        x[s] = means[y[s]] + drift + rng.normal(0.0, noise, size=(steps, features))
    return x, y
