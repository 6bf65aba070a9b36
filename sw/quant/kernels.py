"""Compiled element-wise steps of the golden model (numba), bit-exact with :mod:`deltarnn.spec.contract`.

The golden model's time loop does one matrix product per step (BLAS, exact
for these integers) and a few dozen element-wise integer operations:
requantization of both paths' products, the gate tables, the cell update in
fixed point, the quantization of the new hidden state and its delta
encoding. In NumPy each of those is a separate pass over small arrays; here
they are one compiled call per step (:func:`recurrent_step`), or, for SRU,
whose recurrence has no matrix, one compiled call over the whole sequence
(:func:`sru_sequence`). Every kernel releases the GIL, so that
:func:`deltarnn.quant.golden.emulate` can run parts of a batch in threads.

Every function re-states a rule of the contract on scalars (``int64``):
``round_shift`` rounds half up with an arithmetic (flooring) shift,
saturation clamps to two's complement ranges, ``quantize_act`` clamps
symmetrically. Where an outcome is data-dependent (the delta rule) it is
computed as arithmetic, not a branch. ``tests/quant/test_kernels.py`` checks
the kernels against the contract's NumPy functions on random and extreme
values, and the golden model's tests against the literal Python-integer
reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from deltarnn.spec import contract as C

__all__ = ["CELL_CODE", "delta_encode", "recurrent_step", "requantize_rows", "sru_sequence"]

#: The ``cell`` argument of :func:`recurrent_step`.
CELL_CODE = {"lstm": 0, "gru": 1, "ligru": 2}

_FX_FRAC = C.FX_FRAC
_FX_ONE = C.FX_ONE
_FX_LO, _FX_HI = C.FX_MIN, C.FX_MAX
_LUT_N = 1 << C.LUT_ADDR_BITS
_SIG_SHIFT = C.LUT_SHIFT["sigmoid"]
_TANH_SHIFT = C.LUT_SHIFT["tanh"]
SIGMOID = C.SIGMOID_TABLE.astype(np.int64)
TANH = C.TANH_TABLE.astype(np.int64)


@njit(cache=True, inline="always")
def _round_shift(v, shift):
    if shift == 0:
        return v
    return (v + (np.int64(1) << (shift - 1))) >> shift


@njit(cache=True, inline="always")
def _sat(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


@njit(cache=True, inline="always")
def _fx(v):
    return _sat(v, _FX_LO, _FX_HI)


@njit(cache=True, inline="always")
def _fx_mul(a, b):
    return _fx(_round_shift(a * b, _FX_FRAC))


@njit(cache=True, inline="always")
def _lut(x, shift, table):
    return table[_sat((x >> shift) + _LUT_N // 2, 0, _LUT_N - 1)]


@njit(cache=True, inline="always")
def _requantize_fx(acc, mult, rounding, shift):
    return _fx((acc * mult + rounding) >> shift)


@njit(cache=True, inline="always")
def _requantize_row(prod, mult, rounding, shift, out):
    """``out = requantize(prod)``; ``prod`` holds exact integers."""
    for j in range(out.shape[0]):
        out[j] = _requantize_fx(np.int64(prod[j]), mult[j], rounding[j], shift)


@njit(cache=True, nogil=True)
def requantize_rows(prod, mult, rounding, shift, out):
    """Accumulators to fixed point: ``out[n, r] = saturate((int(prod[n, r]) * mult[r] + rounding[r]) >> shift)``.

    ``prod`` ``(N, R)`` holds exact integers (a BLAS product in float32 or
    float64); ``rounding`` is ``2**(shift-1)`` per row (0 when ``shift`` is 0),
    the contract's round half up.
    """
    n_rows, rows = prod.shape
    for n in range(n_rows):
        _requantize_row(prod[n], mult, rounding, shift, out[n])


@njit(cache=True, nogil=True)
def delta_encode(q, theta, refs, fired):
    """The delta rule over whole sequences ``q`` ``(B, T, N)``: references start at 0,
    ``fired = |q - ref| > theta``, and a fired element's reference becomes ``q``.

    Writes the reference after each step into ``refs`` and the rule's outcome into ``fired``.
    """
    bsz, steps, n = q.shape
    for b in range(bsz):
        ref = np.zeros(n, dtype=q.dtype)
        for t in range(steps):
            qt, rt, ft = q[b, t], refs[b, t], fired[b, t]
            for k in range(n):
                f = abs(qt[k] - ref[k]) > theta
                ref[k] = qt[k] if f else ref[k]
                rt[k] = ref[k]
                ft[k] = f


@njit(cache=True, inline="always")
def _accumulate_row(prod, acc, mult, rounding, shift, dense, out):
    """``out = requantize(acc)`` after ``acc += prod`` (``dense``: ``acc = prod``); ``prod`` holds exact integers."""
    for j in range(out.shape[0]):
        a = np.int64(prod[j]) if dense else acc[j] + np.int64(prod[j])
        acc[j] = a
        out[j] = _requantize_fx(a, mult[j], rounding[j], shift)


@njit(cache=True, inline="always")
def _pre(x, hh, bias, j):
    """Row ``j``'s pre-activation: both paths and the bias, saturated."""
    return _fx(x[j] + hh[j] + bias[j])


@njit(cache=True, inline="always")
def _lstm_row(x, hh, bias, c, h):
    hs = h.shape[0]
    for k in range(hs):
        i = _lut(_pre(x, hh, bias, k), _SIG_SHIFT, SIGMOID)
        f = _lut(_pre(x, hh, bias, hs + k), _SIG_SHIFT, SIGMOID)
        g = _lut(_pre(x, hh, bias, 2 * hs + k), _TANH_SHIFT, TANH)
        o = _lut(_pre(x, hh, bias, 3 * hs + k), _SIG_SHIFT, SIGMOID)
        ck = _fx(_fx_mul(f, c[k]) + _fx_mul(i, g))
        c[k] = ck
        h[k] = _fx_mul(o, _lut(ck, _TANH_SHIFT, TANH))


@njit(cache=True, inline="always")
def _gru_row(x, hh, bias, bias_hn, h_prev, h):
    hs = h.shape[0]
    for k in range(hs):
        r = _lut(_pre(x, hh, bias, k), _SIG_SHIFT, SIGMOID)
        z = _lut(_pre(x, hh, bias, hs + k), _SIG_SHIFT, SIGMOID)
        j = 2 * hs + k
        nh = _fx(hh[j] + bias_hn[k])
        n = _lut(_fx(_fx(x[j] + bias[j]) + _fx_mul(r, nh)), _TANH_SHIFT, TANH)
        h[k] = _fx(_fx_mul(_FX_ONE - z, n) + _fx_mul(z, h_prev[k]))


@njit(cache=True, inline="always")
def _ligru_row(x, hh, bias, h_prev, h):
    hs = h.shape[0]
    for k in range(hs):
        a = _pre(x, hh, bias, k)
        z = _lut(_pre(x, hh, bias, hs + k), _SIG_SHIFT, SIGMOID)
        h[k] = _fx(_fx_mul(z, h_prev[k]) + _fx_mul(_FX_ONE - z, max(a, np.int64(0))))


@njit(cache=True, inline="always")
def _quantize(v, mult, rounding, shift, qm):
    """The contract's ``quantize_act`` of one value (``rounding``: ``2**(shift-1)``, or 0)."""
    return min(max((v * mult + rounding) >> shift, -qm), qm)


@njit(cache=True, inline="always")
def _encode_row(h, a_mult, a_round, a_shift, qm, theta, dense, ref, vin):
    """Quantize the new ``h`` for the h path and delta-encode it; return the deltas emitted."""
    if dense:
        for k in range(h.shape[0]):
            vin[k] = _quantize(h[k], a_mult, a_round, a_shift, qm)
        return h.shape[0]
    n = 0
    for k in range(h.shape[0]):
        d = _quantize(h[k], a_mult, a_round, a_shift, qm) - ref[k]
        fired = np.int64(abs(d) > theta)  # arithmetic, not a branch: the outcome is data-dependent
        ref[k] += fired * d
        vin[k] = fired * d
        n += fired
    return n


@njit(cache=True, nogil=True)
def recurrent_step(cell, prod_x, rq_x, prod_h, acc_h, rq_h, bias, bias_hn, c, h_prev, act, dense, ref_h, vin, h,
                   counts):
    """One time step of an LSTM / GRU / LiGRU direction, for every sequence of a batch.

    Per sequence: requantize both paths' products (passes the compiler
    vectorizes), the cell update (one neuron at a time: the activation
    tables), then quantize and delta-encode the new ``h`` for the next
    step's h-path product.

    Parameters
    ----------
    cell : int
        :data:`CELL_CODE` of the cell.
    prod_x : float ``(B, G*H)``
        This step's x-path product ``W_x @ ref_x`` (exact integers).
    rq_x : tuple (int64 ``(G*H,)``, int64 ``(G*H,)``, int)
        Its requantization to fixed point: multipliers, rounding constants
        (``2**(shift-1)``, or 0) and shift, as :func:`requantize_rows`.
    prod_h : float ``(B, G*H)``
        This step's h-path product of the deltas (exact integers): added to
        ``acc_h``, or, when ``dense``, its new value.
    acc_h : int64 ``(B, G*H)``
        The h path's accumulators, updated in place.
    rq_h : tuple
        The requantization of ``acc_h``, as ``rq_x``.
    bias, bias_hn : int64 ``(G*H,)``, ``(H,)``
        The layer's fixed-point vectors (``bias_hn``: GRU only, any array otherwise).
    c : int64 ``(B, H)``
        The LSTM cell state, updated in place (any array otherwise).
    h_prev : int64 ``(B, H)``
        The previous step's ``h``.
    act : tuple of int
        The h path's activation quantizer and delta threshold: ``(mult, shift, bits, theta)``.
    dense : bool
        Without delta encoding: ``vin`` gets the quantized ``h`` itself.
    ref_h : int64 ``(B, H)``
        The h path's delta references, updated in place.
    vin : float ``(B, H)``
        Out: the input of the next step's h-path product (deltas, or ``h`` quantized when ``dense``).
    h : int64 ``(B, H)``
        Out: the new ``h``.
    counts : int64 ``(B,)``
        Out: deltas emitted per sequence (``H`` each when ``dense``).
    """
    a_mult, a_shift, a_bits, theta = act
    qm = (np.int64(1) << (a_bits - 1)) - 1
    a_round = (np.int64(1) << a_shift) >> 1
    x = np.empty(prod_x.shape[1], dtype=np.int64)
    hh = np.empty(prod_h.shape[1], dtype=np.int64)
    for b in range(h.shape[0]):
        _requantize_row(prod_x[b], rq_x[0], rq_x[1], rq_x[2], x)
        _accumulate_row(prod_h[b], acc_h[b], rq_h[0], rq_h[1], rq_h[2], dense, hh)
        if cell == 0:
            _lstm_row(x, hh, bias, c[b], h[b])
        elif cell == 1:
            _gru_row(x, hh, bias, bias_hn, h_prev[b], h[b])
        else:
            _ligru_row(x, hh, bias, h_prev[b], h[b])
        counts[b] = _encode_row(h[b], a_mult, a_round, a_shift, qm, theta, dense, ref_h[b], vin[b])


@njit(cache=True, nogil=True)
def sru_sequence(rqx, hw, vf, vr, bias, out):
    """A whole SRU direction: ``rqx`` int32 ``(B, T, G*H)``, highway int32 ``(B, T, H)`` -> ``out`` ``(B, T, H)``.

    ``hw`` is the fixed-point highway input: the requantized x references, or
    the projection block of ``rqx`` (``G = 4``) passed as that slice.
    """
    bsz, steps, _ = rqx.shape
    hs = out.shape[2]
    for b in range(bsz):
        for k in range(hs):
            ck = np.int64(0)
            for t in range(steps):
                f = _lut(_fx(rqx[b, t, hs + k] + _fx_mul(vf[k], ck) + bias[k]), _SIG_SHIFT, SIGMOID)
                r = _lut(_fx(rqx[b, t, 2 * hs + k] + _fx_mul(vr[k], ck) + bias[hs + k]), _SIG_SHIFT, SIGMOID)
                ck = _fx(_fx_mul(f, ck) + _fx_mul(_FX_ONE - f, np.int64(rqx[b, t, k])))
                out[b, t, k] = _fx(_fx_mul(r, ck) + _fx_mul(_FX_ONE - r, np.int64(hw[b, t, k])))
