"""Argument types and input loaders shared by every ``deltarnn`` command."""

from __future__ import annotations

import argparse
from pathlib import Path

from deltarnn.spec import contract as C
from deltarnn.spec.cells import CELLS
from deltarnn.spec.memory_map import check_lanes

from .errors import UserError

__all__ = ["CELLS", "add_model_args", "bits", "lanes", "load_array", "load_qmodel", "nonneg_int", "pos_float",
           "pos_int", "unit_float"]


def _int(text: str, low: int | None = None) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if low is not None and v < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
    return v


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _from_spec(check, value, name: str):
    """``check(value)``, its ``ValueError`` as argparse's error (without ``name``, which argparse names)."""
    try:
        return check(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"{name} ")) from None


def nonneg_int(text: str) -> int:
    """A whole number >= 0."""
    return _int(text, 0)


def pos_int(text: str) -> int:
    """A whole number >= 1."""
    return _int(text, 1)


def pos_float(text: str) -> float:
    """A finite number > 0."""
    v = _float(text)
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def unit_float(text: str) -> float:
    """A number in ``[0, 1)``."""
    v = _float(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return v


def bits(text: str) -> int:
    """A weight or activation width the contract allows."""
    return _from_spec(lambda v: C.check_bits("width", v), nonneg_int(text), "width")


def lanes(text: str) -> int:
    """A lane count of a core (a power of two)."""
    return _from_spec(check_lanes, _int(text), "lanes")


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


def add_model_args(parser) -> None:
    """``MODEL.qmodel --input X.npy [--theta-x T] [--theta-h T]``: what every command that runs a QModel takes."""
    parser.add_argument("model", metavar="MODEL.qmodel")
    parser.add_argument("--input", required=True, metavar="X.npy", help="float32 inputs (batch, time, features)")
    parser.add_argument("--theta-x", type=nonneg_int, default=None, metavar="T",
                        help="delta threshold of every x path (and the head), in quantization steps "
                             "(default: the value stored in the model, 0 unless set)")
    parser.add_argument("--theta-h", type=nonneg_int, default=None, metavar="T",
                        help="delta threshold of every h path, in quantization steps")


def load_qmodel(args):
    """The QModel ``args.model`` with the thresholds ``args.theta_x`` / ``args.theta_h`` (where given) set."""
    from deltarnn.quant.qmodel import QModel

    qm = QModel.load(args.model)
    try:
        qm.set_thresholds(args.theta_x, args.theta_h)
    except ValueError as e:
        raise UserError(str(e)) from None
    return qm
