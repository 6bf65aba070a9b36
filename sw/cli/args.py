"""Argument types and input loaders shared by every ``deltarnn`` command."""

from __future__ import annotations

import argparse
from pathlib import Path

from deltarnn.spec import contract as C
from deltarnn.spec.cells import CELLS
from deltarnn.spec.memory_map import check_lanes

from .errors import UserError

__all__ = ["CELLS", "bits", "lanes", "load_array", "nonneg_int", "pos_float", "pos_int"]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def nonneg_int(text: str) -> int:
    """A whole number >= 0."""
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def pos_int(text: str) -> int:
    """A whole number >= 1."""
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def pos_float(text: str) -> float:
    """A finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def bits(text: str) -> int:
    """A weight or activation width the contract allows."""
    try:
        return C.check_bits("width", nonneg_int(text), error=argparse.ArgumentTypeError)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("width ")) from None


def lanes(text: str) -> int:
    """A lane count of a core (a power of two)."""
    try:
        return check_lanes(_int(text), error=argparse.ArgumentTypeError)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("lanes ")) from None


def load_array(path: str, what: str):
    """Load a ``.npy`` file or fail with a message naming it."""
    import numpy as np

    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} file {path}: no such file")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises several kinds for a bad file
        raise UserError(f"{what} file {path} is not a NumPy .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise UserError(f"{what} file {path} is not a NumPy .npy array (it is a zip archive, such as .npz "
                        "or a torch file); give one (batch, time, features) .npy array")
    return arr
