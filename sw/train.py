"""Training of per-frame classifiers (used by the demo; the study builds on it)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def train_frames(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 30, lr: float = 1e-2,
                 batch: int = 16, seed: int = 0, progress=None) -> list[float]:
    """Train ``model`` to label every frame of ``x`` ``(N, T, F)`` with ``y`` ``(N, T)``.

    Adam and per-frame cross entropy. ``progress`` is an optional callable
    ``(epoch, loss)``. Returns the mean loss of each epoch.
    """
    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            logits = model(xt[idx])
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), yt[idx].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(xt))
        if progress is not None:
            progress(epoch, losses[-1])
    model.eval()
    return losses


def frame_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Share of frames whose argmax equals the label."""
    return float((np.asarray(logits).argmax(-1) == y).mean())
