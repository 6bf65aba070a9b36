"""Random models and inputs shared by the software tests."""

from __future__ import annotations

import numpy as np
import torch

from deltarnn.models import RNNModel


def random_model(cell: str, input_size: int = 5, hidden: int = 6, layers: int = 1, bidirectional: bool = False,
                 classes: int = 3, seed: int = 0) -> RNNModel:
    """A randomly initialised model with non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    m = RNNModel(cell, input_size, hidden, layers, bidirectional, classes)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "bias" in name or name.endswith((".bf", ".br")):
                p.uniform_(-0.5, 0.5)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
    return m.eval()


def random_input(batch: int, steps: int, features: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(batch, steps, features)) * scale).astype(np.float32)


def float_outputs(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()
