"""Post-training quantization: a float model plus calibration data -> QModel.

Weight matrices become ``wbits``-bit symmetric integers with one scale per
row; activations feeding each matrix-vector product become ``abits``-bit
integers with one scale per layer and path; both clipping ranges are chosen
by minimum mean-square error (MMSE). Everything else is 16-bit fixed point.
A skipped path keeps 16-bit weights and activations. See docs/datapath.md.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from deltarnn.spec import contract as C
from deltarnn.models import RNNModel, canonical, from_torch
from deltarnn.quant.qmodel import QActivation, QDirection, QHead, QLayer, QMatrix, QModel

#: Candidate clipping ranges, as fractions of the largest magnitude.
CLIP_FRACTIONS = np.linspace(0.05, 1.0, 96)
#: At most this many calibration values are used per path (a fixed subsample).
MAX_CALIB_VALUES = 200_000


class QuantizationError(ValueError):
    """The requested quantization cannot be done (bad widths, paths, sizes)."""


def mmse_weight_scales(w: np.ndarray, bits: int) -> np.ndarray:
    """Per-row scales of a symmetric ``bits``-bit quantizer, clip chosen by MMSE."""
    m = C.qmax(bits)
    top = np.abs(w).max(axis=1)
    best_err = np.full(w.shape[0], np.inf)
    best = np.where(top > 0, top / m, 1.0)
    fractions = CLIP_FRACTIONS if bits < C.MAX_BITS else CLIP_FRACTIONS[-1:]
    for frac in fractions:
        s = np.where(top > 0, frac * top / m, 1.0)
        q = np.clip(np.floor(w / s[:, None] + 0.5), -m, m)
        err = ((q * s[:, None] - w) ** 2).sum(axis=1)
        better = err < best_err
        best_err[better] = err[better]
        best[better] = s[better]
    return best


def mmse_activation_scale(values: np.ndarray, bits: int, min_scale: float = 0.0) -> float:
    """Scale of a symmetric ``bits``-bit activation quantizer, clip chosen by MMSE."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size > MAX_CALIB_VALUES:
        v = v[np.random.default_rng(0).choice(v.size, MAX_CALIB_VALUES, replace=False)]
    m = C.qmax(bits)
    top = float(np.abs(v).max()) if v.size else 0.0
    if top == 0.0:
        return max(1.0 / m, min_scale)
    best, best_err = top / m, np.inf
    fractions = CLIP_FRACTIONS if bits < C.MAX_BITS else CLIP_FRACTIONS[-1:]
    for frac in fractions:
        s = max(frac * top / m, min_scale)
        err = float(((np.clip(np.floor(v / s + 0.5), -m, m) * s - v) ** 2).mean())
        if err < best_err:
            best, best_err = s, err
    return best


def quantize_matrix(w: np.ndarray, wbits: int, act_scale: float) -> QMatrix:
    """Quantize float matrix ``w`` and derive its accumulator multipliers."""
    scale = mmse_weight_scales(w, wbits)
    m = C.qmax(wbits)
    q = np.clip(np.floor(w / scale[:, None] + 0.5), -m, m).astype(np.int64)
    real = np.where(np.abs(q).max(axis=1) > 0, scale * act_scale * C.FX_ONE, 0.0)
    try:
        mult, shift = C.multiplier(real)
    except ValueError as e:
        raise QuantizationError(f"cannot requantize this matrix: {e}") from None
    return QMatrix(q, wbits, scale, mult, shift)


def activation_quantizer(values: np.ndarray, bits: int, fixed_point_input: bool) -> QActivation:
    """MMSE activation quantizer for one path.

    Inputs that arrive in fixed point (every path but the first layer's x)
    never get a step finer than one fixed-point step: it would add no
    information.
    """
    scale = mmse_activation_scale(values, bits, 1.0 / C.FX_ONE if fixed_point_input else 0.0)
    mult, shift = C.multiplier(np.array([1.0 / (C.FX_ONE * scale)]))
    return QActivation(bits=bits, scale=float(scale), mult=int(mult[0]), shift=int(shift))


def to_fx(v: np.ndarray) -> np.ndarray:
    """Float vector -> fixed point (round half up, saturate)."""
    return C.saturate(np.floor(np.asarray(v, dtype=np.float64) * C.FX_ONE + 0.5), C.FX_BITS).astype(np.int64)


def path_names(num_layers: int, cell: str, head: bool) -> list[str]:
    names = []
    for i in range(num_layers):
        names.append(f"{i}.x")
        if cell != "sru":
            names.append(f"{i}.h")
    if head:
        names.append("head.x")
    return names


@torch.no_grad()
def calibration_activations(model: RNNModel, calib: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Float inputs and outputs of every layer on the calibration data."""
    x = torch.as_tensor(np.asarray(calib, dtype=np.float32))
    outs = model.eval().layer_outputs(x)
    ins = [x] + outs[:-1]
    return [t.numpy() for t in ins], [t.numpy() for t in outs]


def quantize(model, calib: np.ndarray, wbits: int = C.DEFAULT_WBITS, abits: int = C.DEFAULT_ABITS,
             skip: Iterable[str] = (), meta: dict | None = None) -> QModel:
    """Quantize a float model.

    Parameters
    ----------
    model : RNNModel or a module accepted by :func:`deltarnn.models.from_torch`
    calib : float array ``(batch, time, input_size)``
        Calibration sequences; activation clipping is chosen on them.
    wbits, abits : int
        Widths of weight matrices and MxV activations (2..16).
    skip : iterable of str
        Paths (``"0.x"``, ``"1.h"``, ``"head.x"``) left at 16 bits.
    meta : dict, optional
        Free-form provenance stored in the file (beside the widths, the skipped
        paths and the model's ``output_delay``).
    """
    C.check_bits("wbits", wbits, QuantizationError)
    C.check_bits("abits", abits, QuantizationError)
    model = from_torch(model)
    spec = canonical(model)
    calib = np.asarray(calib, dtype=np.float32)
    if calib.ndim != 3 or calib.shape[2] != spec.input_size:
        raise QuantizationError(
            f"calibration data must be (batch, time, {spec.input_size}); got shape {calib.shape}")
    if calib.size == 0:
        raise QuantizationError(f"calibration data of shape {calib.shape} holds no time steps")
    if not np.all(np.isfinite(calib)):
        raise QuantizationError("calibration data contains NaN or infinite values")
    skip = set(skip)
    valid = path_names(spec.num_layers, spec.cell, spec.head_w is not None)
    unknown = skip - set(valid)
    if unknown:
        raise QuantizationError(
            f"unknown path(s) to skip: {', '.join(sorted(unknown))}; this model's paths are {', '.join(valid)}")

    def bits_of(path: str) -> tuple[int, int]:
        return (C.MAX_BITS, C.MAX_BITS) if path in skip else (wbits, abits)

    ins, outs = calibration_activations(model, calib)
    hs = spec.hidden_size
    layers = []
    for i, dirs in enumerate(spec.layers):
        wb_x, ab_x = bits_of(f"{i}.x")
        x_act = activation_quantizer(ins[i], ab_x, fixed_point_input=i > 0)
        h_act = None
        if spec.cell != "sru":
            wb_h, ab_h = bits_of(f"{i}.h")
            h_act = activation_quantizer(outs[i], ab_h, fixed_point_input=True)
        qdirs = []
        for d in dirs:
            qx = quantize_matrix(d.w_x, wb_x, x_act.scale)
            qh = quantize_matrix(d.w_h, wb_h, h_act.scale) if d.w_h is not None else None
            highway = None
            if spec.cell == "sru" and d.w_x.shape[0] == 3 * hs:
                mult, shift = C.multiplier(np.array([x_act.scale * C.FX_ONE]))
                highway = (int(mult[0]), int(shift))
            qdirs.append(QDirection(qx, qh, {k: to_fx(v) for k, v in d.vectors.items()}, highway))
        layers.append(QLayer(x_act, h_act, qdirs))
    head = None
    if spec.head_w is not None:
        wb, ab = bits_of("head.x")
        act = activation_quantizer(outs[-1], ab, fixed_point_input=True)
        head = QHead(act, quantize_matrix(spec.head_w, wb, act.scale), to_fx(spec.head_b))
    info = {"wbits": wbits, "abits": abits, "skip": sorted(skip), "calib_shape": list(calib.shape),
            "output_delay": model.output_delay}
    info.update(meta or {})
    qm = QModel(spec.cell, spec.input_size, hs, spec.bidirectional, layers, head, spec.float_params, info)
    need = qm.accumulator_bits()
    if need > C.ACC_BITS:
        raise QuantizationError(
            f"this model needs {need}-bit accumulators (largest fan-in at these widths), more than the "
            f"{C.ACC_BITS} bits of the data path: use fewer bits on the widest paths")
    return qm
