"""The cell updates written with the contract's vectorised NumPy rules, one time step at a time.

The oracle that the golden model's compiled kernels (``tests/quant/test_kernels.py``)
and the gateware's cell engine (``tests/hw/test_engine.py``) are checked
against: the same order of integer operations as ``docs/datapath.md``, in
NumPy over whole vectors instead of one neuron at a time.
"""

import numpy as np

from deltarnn.spec import contract as C


def _split(v: np.ndarray, n: int) -> list[np.ndarray]:
    return np.split(v, n, axis=-1)


def lstm_step(rqx, rqh, vec: dict, state):
    """One LSTM update: pre-activations in fixed point -> (h, c)."""
    h, c = state
    i, f, g, o = _split(C.fx_add(rqx, rqh, vec["bias"]), 4)
    i, f, g, o = C.sigmoid(i), C.sigmoid(f), C.tanh(g), C.sigmoid(o)
    c = C.fx_add(C.fx_mul(f, c), C.fx_mul(i, g))
    return C.fx_mul(o, C.tanh(c)), c


def gru_step(rqx, rqh, vec: dict, state):
    """One GRU update (PyTorch form; the reset gate scales the hidden part of n)."""
    h, _ = state
    xr, xz, xn = _split(rqx, 3)
    hr, hz, hn = _split(rqh, 3)
    br, bz, bn = _split(vec["bias"], 3)
    r = C.sigmoid(C.fx_add(xr, hr, br))
    z = C.sigmoid(C.fx_add(xz, hz, bz))
    nh = C.fx_add(hn, vec["bias_hn"])
    n = C.tanh(C.fx_add(C.fx_add(xn, bn), C.fx_mul(r, nh)))
    return C.fx_add(C.fx_mul(C.FX_ONE - z, n), C.fx_mul(z, h)), None


def ligru_step(rqx, rqh, vec: dict, state):
    """One LiGRU update (batch norm folded into the x-path weights and bias)."""
    h, _ = state
    a, z = _split(C.fx_add(rqx, rqh, vec["bias"]), 2)
    z = C.sigmoid(z)
    return C.fx_add(C.fx_mul(z, h), C.fx_mul(C.FX_ONE - z, C.relu(a))), None


def sru_step(rqx, highway, vec: dict, state):
    """One SRU update; ``highway`` is the fixed-point skip input."""
    _, c = state
    parts = _split(rqx, rqx.shape[-1] // c.shape[-1])
    xt, fx, rx = parts[:3]
    bf, br = _split(vec["bias"], 2)
    f = C.sigmoid(C.fx_add(fx, C.fx_mul(vec["vf"], c), bf))
    r = C.sigmoid(C.fx_add(rx, C.fx_mul(vec["vr"], c), br))
    c = C.fx_add(C.fx_mul(f, c), C.fx_mul(C.FX_ONE - f, xt))
    hw = highway if highway is not None else parts[3]
    return C.fx_add(C.fx_mul(r, c), C.fx_mul(C.FX_ONE - r, hw)), c


STEPS = {"lstm": lstm_step, "gru": gru_step, "ligru": ligru_step}
