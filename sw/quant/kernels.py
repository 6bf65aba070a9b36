"""Compiled element-wise steps of the golden model (numba), bit-exact with :mod:`deltarnn.spec.contract`.

The golden model's time loop does one matrix product per step (BLAS, exact
for these integers, :func:`deltarnn.quant.golden.matvec_fx`) and a few dozen
element-wise integer operations: requantization of the accumulators, the
gate tables, the cell update in fixed point, the quantization of the new
hidden state and its delta encoding. In NumPy each of those is a separate
pass over small arrays; here they are one compiled loop per step
(:func:`recurrent_step`), or, for SRU, whose recurrence has no matrix, one
compiled loop over the whole sequence (:func:`sru_sequence`).

Every function re-states a rule of the contract on scalars (``int64``):
``round_shift`` rounds half up with an arithmetic (flooring) shift,
saturation clamps to two's complement ranges, ``quantize_act`` clamps
symmetrically. ``tests/quant/test_kernels.py`` checks them against the
contract's NumPy functions on random and extreme values, and the golden
model's tests against the literal Python-integer reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from deltarnn.spec import contract as C

__all__ = ["CELL_CODE", "recurrent_step", "requantize_rows", "sru_sequence"]

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


@njit(cache=True)
def requantize_rows(prod, mult, rounding, shift, out):
    """Accumulators to fixed point: ``out[n, r] = saturate((int(prod[n, r]) * mult[r] + rounding[r]) >> shift)``.

    ``prod`` ``(N, R)`` holds exact integers (a BLAS product in float32 or
    float64); ``rounding`` is ``2**(shift-1)`` per row (0 when ``shift`` is 0),
    the contract's round half up.
    """
    n_rows, rows = prod.shape
    for n in range(n_rows):
        for r in range(rows):
            out[n, r] = _requantize_fx(np.int64(prod[n, r]), mult[r], rounding[r], shift)


@njit(cache=True)
def recurrent_step(cell, rqx, acc_h, mult_h, round_h, shift_h, bias, bias_hn, h, c, a_mult, a_shift, a_bits, theta,
                   ref_h, dense, vin, out_h, counts, sig, tanh):
    """One time step of an LSTM / GRU / LiGRU direction, for every sequence of a batch.

    Parameters
    ----------
    cell : int
        :data:`CELL_CODE` of the cell.
    rqx : int32 ``(B, Gx*H)``
        The x path's pre-activations of this step, already in fixed point.
    acc_h : int64 ``(B, Gh*H)``
        The h path's accumulators after this step's product.
    mult_h, round_h, shift_h : int64 ``(Gh*H,)``, int64 ``(Gh*H,)``, int
        Requantization of ``acc_h`` to fixed point (as :func:`requantize_rows`).
    bias, bias_hn : int64 ``(G*H,)``, ``(H,)``
        The layer's fixed-point vectors (``bias_hn``: GRU only, any array otherwise).
    h, c : int32 ``(B, H)``
        State, updated in place (``c``: LSTM only).
    a_mult, a_shift, a_bits, theta : int
        The h path's activation quantizer and delta threshold.
    ref_h : int64 ``(B, H)``
        The h path's delta references, updated in place.
    dense : bool
        Without delta encoding: ``vin`` gets the quantized ``h`` itself.
    vin : float ``(B, H)``
        Out: the input of the next step's h-path product (deltas, or ``h`` quantized when ``dense``).
    out_h : int64 ``(B, H)``
        Out: the new ``h``.
    counts : int64 ``(B,)``
        Out: deltas emitted per sequence (``H`` each when ``dense``).
    sig, tanh : int64 ``(2**LUT_ADDR_BITS,)``
        The activation tables.
    """
    bsz, hs = h.shape
    gates = acc_h.shape[1] // hs
    qm = (np.int64(1) << (a_bits - 1)) - 1
    x = np.empty(4, dtype=np.int64)   # per gate: the x pre-activation, bias included where it is added to it
    rh = np.empty(4, dtype=np.int64)  # per gate: the h path's accumulator in fixed point
    for b in range(bsz):
        n = 0
        for k in range(hs):
            for g in range(gates):
                j = g * hs + k
                x[g] = rqx[b, j]
                rh[g] = _requantize_fx(acc_h[b, j], mult_h[j], round_h[j], shift_h)
            hk = np.int64(h[b, k])
            if cell == 0:  # LSTM: i f g o
                i = _lut(_fx(x[0] + rh[0] + bias[k]), _SIG_SHIFT, sig)
                f = _lut(_fx(x[1] + rh[1] + bias[hs + k]), _SIG_SHIFT, sig)
                gg = _lut(_fx(x[2] + rh[2] + bias[2 * hs + k]), _TANH_SHIFT, tanh)
                o = _lut(_fx(x[3] + rh[3] + bias[3 * hs + k]), _SIG_SHIFT, sig)
                ck = _fx(_fx_mul(f, np.int64(c[b, k])) + _fx_mul(i, gg))
                c[b, k] = ck
                hk = _fx_mul(o, _lut(ck, _TANH_SHIFT, tanh))
            elif cell == 1:  # GRU: r z n, the reset gate on the hidden part of n
                r = _lut(_fx(x[0] + rh[0] + bias[k]), _SIG_SHIFT, sig)
                z = _lut(_fx(x[1] + rh[1] + bias[hs + k]), _SIG_SHIFT, sig)
                nh = _fx(rh[2] + bias_hn[k])
                nn = _lut(_fx(_fx(x[2] + bias[2 * hs + k]) + _fx_mul(r, nh)), _TANH_SHIFT, tanh)
                hk = _fx(_fx_mul(_FX_ONE - z, nn) + _fx_mul(z, hk))
            else:  # LiGRU: a z
                a = _fx(x[0] + rh[0] + bias[k])
                z = _lut(_fx(x[1] + rh[1] + bias[hs + k]), _SIG_SHIFT, sig)
                hk = _fx(_fx_mul(z, hk) + _fx_mul(_FX_ONE - z, a if a > 0 else np.int64(0)))
            h[b, k] = hk
            out_h[b, k] = hk
            q = _sat(_round_shift(hk * a_mult, a_shift), -qm, qm)
            if dense:
                vin[b, k] = q
                n += 1
            else:
                d = q - ref_h[b, k]
                if abs(d) > theta:
                    ref_h[b, k] = q
                    vin[b, k] = d
                    n += 1
                else:
                    vin[b, k] = 0
        counts[b] = n


@njit(cache=True)
def sru_sequence(rqx, hw, vf, vr, bias, out, sig):
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
                f = _lut(_fx(rqx[b, t, hs + k] + _fx_mul(vf[k], ck) + bias[k]), _SIG_SHIFT, sig)
                r = _lut(_fx(rqx[b, t, 2 * hs + k] + _fx_mul(vr[k], ck) + bias[hs + k]), _SIG_SHIFT, sig)
                ck = _fx(_fx_mul(f, ck) + _fx_mul(_FX_ONE - f, np.int64(rqx[b, t, k])))
                out[b, t, k] = _fx(_fx_mul(r, ck) + _fx_mul(_FX_ONE - r, np.int64(hw[b, t, k])))
