"""The numeric contract: every width, format and integer rule, defined once.

``docs/datapath.md`` explains each rule; this module implements them for
NumPy integer arrays (and plain Python ints) and is the only place where the
constants live. The golden model (:mod:`deltarnn.quant.golden`) and the gateware (``hw``)
both import from here, so a width or a table cannot differ between them.

All functions are pure, vectorised and exact: they take and return ``int64``
arrays (or Python ints) and never use floating point, except the table
generator, whose float work happens once, at import, identically everywhere.
"""

from __future__ import annotations

import math

import numpy as np

# --- fixed point -----------------------------------------------------------

#: Width of every fixed-point value (biases, scales, cell state, h, gates).
FX_BITS = 16
#: Fractional bits of the fixed-point format: Q5.10, hls4ml's ``ap_fixed<16,6>``.
FX_FRAC = 10
FX_ONE = 1 << FX_FRAC
FX_MAX = (1 << (FX_BITS - 1)) - 1
FX_MIN = -(1 << (FX_BITS - 1))

# --- integer matrix-vector product -------------------------------------------

#: Widths allowed for weight matrices and for MxV activations.
MIN_BITS = 2
MAX_BITS = 16
#: Default widths of the study (weights 4 bit, activations 8 bit).
DEFAULT_WBITS = 4
DEFAULT_ABITS = 8
#: Accumulators are signed and this wide; a QModel whose worst case needs
#: more is refused at quantization time.
ACC_BITS = 48
#: Requantization multipliers are unsigned and below ``2**MULT_BITS``.
MULT_BITS = 15
#: Largest requantization shift (``acc * mult`` stays below ``2**63``).
SHIFT_MAX = 62 - MULT_BITS

# --- activation tables --------------------------------------------------------

#: Each activation table has ``2**LUT_ADDR_BITS`` entries.
LUT_ADDR_BITS = 10
#: Input of entry k of a table: fixed-point values in
#: ``[(k - 2**(LUT_ADDR_BITS-1)) << shift, ...)``; these shifts give sigmoid
#: the input range [-8, 8) and tanh [-4, 4), both saturated outside.
LUT_SHIFT = {"sigmoid": 4, "tanh": 3}


def check_bits(name: str, bits: int, error: type[Exception] = ValueError) -> int:
    """Return ``bits`` if it is a width the contract allows (``MIN_BITS .. MAX_BITS``), else raise ``error``."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise error(f"{name} must be between {MIN_BITS} and {MAX_BITS} bits, got {bits}")
    return bits


def qmax(bits: int) -> int:
    """Largest magnitude of a symmetric signed integer of ``bits`` bits."""
    return (1 << (bits - 1)) - 1


#: NumPy's clip ufunc (np.clip adds a costly Python layer on small arrays).
_clip = getattr(getattr(np, "_core", None), "umath", np).clip


def saturate(v, bits: int):
    """Clamp signed integers to ``bits`` bits (two's complement range)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if isinstance(v, (int, np.integer)):
        return int(min(max(int(v), lo), hi))
    return _clip(v, lo, hi)


def clamp_symmetric(v, bits: int):
    """Clamp to the symmetric range ``[-qmax(bits), qmax(bits)]``."""
    m = qmax(bits)
    if isinstance(v, (int, np.integer)):
        return int(min(max(int(v), -m), m))
    return _clip(v, -m, m)


def round_shift(v, shift: int):
    """``floor((v + 2**(shift-1)) / 2**shift)``: round half up (towards +inf).

    ``shift = 0`` returns ``v`` unchanged. ``>>`` floors on signed values in
    Python, NumPy and Amaranth alike.
    """
    if shift == 0:
        return v
    return (v + (1 << (shift - 1))) >> shift


def requantize(v, mult, shift: int, bits: int = FX_BITS):
    """``saturate(round_shift(v * mult, shift), bits)``.

    The one rule that rescales integers: accumulators to fixed point
    (``bits = FX_BITS``) and fixed point to MxV activations (``bits = abits``,
    then :func:`clamp_symmetric`). ``mult`` is a scalar or per-element array of
    unsigned integers below ``2**MULT_BITS``.
    """
    return saturate(round_shift(v * mult, shift), bits)


def fx_add(*terms):
    """Exact sum of fixed-point terms, then one saturation to FX_BITS."""
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return saturate(total, FX_BITS)


def fx_mul(a, b):
    """Fixed-point product: ``saturate(round_shift(a * b, FX_FRAC), FX_BITS)``."""
    return saturate(round_shift(a * b, FX_FRAC), FX_BITS)


def quantize_act(h_fx, mult, shift: int, bits: int):
    """Fixed-point vector -> symmetric MxV activation integers of ``bits`` bits."""
    return clamp_symmetric(round_shift(h_fx * mult, shift), bits)


def quantize_float_input(x: np.ndarray, scale: float, bits: int) -> np.ndarray:
    """Host-side quantization of float inputs: ``clamp(floor(x / scale + 0.5))``.

    Computed in float64 from the float32 data; the host driver and the golden
    model call this same function, so they agree exactly.
    """
    q = np.floor(np.asarray(x, dtype=np.float64) / scale + 0.5)
    m = qmax(bits)
    return np.clip(q, -m, m).astype(np.int64)


def relu(v):
    """ReLU on fixed-point integers."""
    return np.maximum(v, 0) if not isinstance(v, int) else max(v, 0)


# --- multipliers ------------------------------------------------------------------


def multiplier(real: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer multipliers and one shared shift approximating ``real``.

    Returns ``(mult, shift)`` with ``mult = round(real * 2**shift)`` below
    ``2**MULT_BITS`` and ``shift`` as large as that allows (at most
    ``SHIFT_MAX``). Raises ``ValueError`` when a factor is too large to
    represent (``real >= 2**MULT_BITS``) or not finite.
    """
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    if not np.all(np.isfinite(real)) or np.any(real < 0):
        raise ValueError("requantization factor is negative or not finite")
    top = float(real.max()) if real.size else 0.0
    limit = (1 << MULT_BITS) - 1
    if top >= limit:
        raise ValueError(f"requantization factor {top:.3g} is too large for a {MULT_BITS}-bit multiplier")
    if top == 0.0:
        shift = 0
    else:
        shift = min(SHIFT_MAX, int(math.floor(math.log2(limit / top))))
        while shift > 0 and np.rint(top * 2.0**shift) > limit:
            shift -= 1
    mult = np.rint(real * 2.0**shift).astype(np.int64)
    return mult, shift


# --- activation tables ------------------------------------------------------------


def activation_table(kind: str) -> np.ndarray:
    """The ROM of a sigmoid or tanh table: ``2**LUT_ADDR_BITS`` fixed-point values.

    Entry k holds the function at the midpoint of the input interval it
    covers, rounded half up to the fixed-point grid. The gateware's ROM is
    initialised from this same array.
    """
    shift = LUT_SHIFT[kind]
    n = 1 << LUT_ADDR_BITS
    k = np.arange(n, dtype=np.float64)
    x = ((k - n // 2) * (1 << shift) + (1 << shift) / 2) / FX_ONE
    y = 1.0 / (1.0 + np.exp(-x)) if kind == "sigmoid" else np.tanh(x)
    return np.floor(y * FX_ONE + 0.5).astype(np.int64)


def lut_index(x_fx, kind: str):
    """Table address of fixed-point input ``x_fx``: ``clamp((x >> shift) + N/2, 0, N-1)``."""
    n = 1 << LUT_ADDR_BITS
    idx = (x_fx >> LUT_SHIFT[kind]) + n // 2
    if isinstance(idx, (int, np.integer)):
        return int(min(max(int(idx), 0), n - 1))
    return _clip(idx, 0, n - 1)


SIGMOID_TABLE = activation_table("sigmoid").astype(np.int32)
TANH_TABLE = activation_table("tanh").astype(np.int32)
_TABLES = {"sigmoid": SIGMOID_TABLE, "tanh": TANH_TABLE}


def sigmoid(x_fx):
    """Fixed-point sigmoid by table lookup."""
    return SIGMOID_TABLE[lut_index(x_fx, "sigmoid")]


def tanh(x_fx):
    """Fixed-point tanh by table lookup."""
    return TANH_TABLE[lut_index(x_fx, "tanh")]


def table(kind: str) -> np.ndarray:
    """The table array for ``kind`` (``"sigmoid"`` or ``"tanh"``)."""
    return _TABLES[kind]


# --- accumulator bound ---------------------------------------------------------------


def accumulator_bits(fan_in: int, wbits: int, abits: int) -> int:
    """Signed width that holds ``W . ref`` for any weights and references.

    The accumulator always equals ``W . ref`` (integer sums telescope), and
    ``|ref| <= qmax(abits)``, so ``fan_in * qmax(wbits) * qmax(abits)`` bounds
    it at every time step of every sequence length.
    """
    bound = fan_in * qmax(wbits) * qmax(abits)
    return max(2, bound.bit_length() + 1)


def delta_bits(abits: int) -> int:
    """Signed width of a delta ``q - ref`` with both in ``[-qmax, qmax]``."""
    return (2 * qmax(abits)).bit_length() + 1
