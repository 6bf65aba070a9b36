"""The quantized model (QModel) and its file format.

A QModel holds everything the golden model and the device need: integer
weight matrices, requantization multipliers, fixed-point vectors, activation
quantizers and delta thresholds. It is saved as one file (a zip archive of
NumPy arrays plus a JSON header with a magic string and a format version);
a damaged, foreign or newer-version file is refused with
:class:`QModelFormatError`.

Paths are named ``"<layer>.x"``, ``"<layer>.h"`` and ``"head.x"``: the input
of one layer's (or the head's) matrix-vector product.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deltarnn.spec import contract as C
from deltarnn.spec.cells import CELLS, H_GATES, X_GATES

MAGIC = "deltarnn-qmodel"
FORMAT_VERSION = 1


def write_atomically(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it: an interrupted write (Ctrl-C, a full
    disk) leaves the old file or none, never a truncated one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class QModelFormatError(ValueError):
    """A file is not a QModel this version can read."""


@dataclass
class QMatrix:
    """One integer weight matrix and the requantization of its accumulator.

    ``weights`` are ``wbits``-bit symmetric integers, ``(rows, cols)``;
    float weight = ``weights * scale[:, None]``. The accumulator of row r is
    turned into fixed point by ``requantize(acc, mult[r], shift)``.
    """

    weights: np.ndarray
    wbits: int
    scale: np.ndarray
    mult: np.ndarray
    shift: int

    @property
    def rows(self) -> int:
        return self.weights.shape[0]

    @property
    def cols(self) -> int:
        return self.weights.shape[1]

    def storage_bits(self) -> int:
        """Bits of the matrix plus one multiplier per row."""
        return self.weights.size * self.wbits + self.rows * C.MULT_BITS


@dataclass
class QActivation:
    """The quantizer in front of one path's matrix-vector product.

    ``q = quantize_act(h_fx, mult, shift, bits)`` for fixed-point inputs
    (layers above the first, hidden paths, the head); the first layer's x is
    quantized on the host from floats with ``scale`` by
    :func:`deltarnn.spec.contract.quantize_float_input`. ``theta`` is the delta
    threshold in units of one quantization step.
    """

    bits: int
    scale: float
    mult: int
    shift: int
    theta: int = 0


@dataclass
class QDirection:
    """One direction of one layer: its matrices and fixed-point vectors.

    ``vectors``: ``bias`` (every cell), ``bias_hn`` (GRU), ``vf``/``vr``
    (SRU), all fixed point. ``highway`` (SRU with equal input and hidden
    sizes) is the ``(mult, shift)`` that turns the x path's reference
    integers into fixed point.
    """

    x: QMatrix
    h: QMatrix | None
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    highway: tuple[int, int] | None = None


@dataclass
class QLayer:
    x_act: QActivation
    h_act: QActivation | None
    directions: list[QDirection]


@dataclass
class QHead:
    act: QActivation
    matrix: QMatrix
    bias: np.ndarray


@dataclass
class QModel:
    """A quantized recurrent model: see ``docs/datapath.md``."""

    cell: str
    input_size: int
    hidden_size: int
    bidirectional: bool
    layers: list[QLayer]
    head: QHead | None
    float_params: int
    meta: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def num_classes(self) -> int:
        return 0 if self.head is None else self.head.matrix.rows

    @property
    def output_size(self) -> int:
        return self.num_classes or self.directions * self.hidden_size

    @property
    def output_delay(self) -> int:
        """Frames of lookahead the float model was trained with (0 for files made before it was recorded)."""
        return int(self.meta.get("output_delay", 0))

    def paths(self) -> dict[str, QActivation]:
        """Every path's activation quantizer, by path name."""
        out = {}
        for i, layer in enumerate(self.layers):
            out[f"{i}.x"] = layer.x_act
            if layer.h_act is not None:
                out[f"{i}.h"] = layer.h_act
        if self.head is not None:
            out["head.x"] = self.head.act
        return out

    def matrices(self, path: str) -> list[QMatrix]:
        """The matrices fed by ``path`` (one per direction; one for the head)."""
        if path == "head.x":
            return [self.head.matrix]
        layer, kind = path.split(".")
        return [getattr(d, kind) for d in self.layers[int(layer)].directions]

    def set_thresholds(self, theta_x: int | None = None, theta_h: int | None = None) -> None:
        """Set every x path's (head included) and every h path's threshold."""
        for name, act in self.paths().items():
            value = theta_h if name.endswith(".h") else theta_x
            if value is not None:
                if value < 0:
                    raise ValueError(f"delta threshold must be >= 0, got {value}")
                act.theta = int(value)

    def storage_bits(self) -> int:
        """Bits of every stored parameter: matrices, multipliers, fixed-point vectors."""
        bits = 0
        for layer in self.layers:
            for d in layer.directions:
                bits += d.x.storage_bits() + (d.h.storage_bits() if d.h is not None else 0)
                bits += sum(v.size for v in d.vectors.values()) * C.FX_BITS
        if self.head is not None:
            bits += self.head.matrix.storage_bits() + self.head.bias.size * C.FX_BITS
        return bits

    def accumulator_bits(self) -> int:
        """The accumulator width this model needs (worst case over its matrices)."""
        need = 2
        for name, act in self.paths().items():
            for m in self.matrices(name):
                need = max(need, C.accumulator_bits(m.cols, m.wbits, act.bits))
        return need

    # --- file format ---------------------------------------------------------------

    def save(self, path) -> None:
        """Write the model to ``path`` (any extension; ``.qmodel`` by convention)."""
        arrays: dict[str, np.ndarray] = {}
        header = {
            "magic": MAGIC, "format_version": FORMAT_VERSION, "cell": self.cell,
            "input_size": self.input_size, "hidden_size": self.hidden_size,
            "bidirectional": self.bidirectional, "float_params": self.float_params,
            "meta": self.meta, "layers": [], "head": None,
        }

        def put_matrix(prefix: str, m: QMatrix) -> dict:
            arrays[prefix + "weights"] = m.weights.astype(np.int16 if m.wbits > 8 else np.int8)
            arrays[prefix + "scale"] = m.scale.astype(np.float64)
            arrays[prefix + "mult"] = m.mult.astype(np.int64)
            return {"wbits": m.wbits, "shift": m.shift}

        for i, layer in enumerate(self.layers):
            lh = {"x_act": vars(layer.x_act).copy(),
                  "h_act": vars(layer.h_act).copy() if layer.h_act else None, "directions": []}
            for j, d in enumerate(layer.directions):
                p = f"l{i}/d{j}/"
                dh = {"x": put_matrix(p + "x/", d.x), "h": put_matrix(p + "h/", d.h) if d.h else None,
                      "vectors": sorted(d.vectors), "highway": list(d.highway) if d.highway else None}
                for name, v in d.vectors.items():
                    arrays[p + "v/" + name] = v.astype(np.int64)
                lh["directions"].append(dh)
            header["layers"].append(lh)
        if self.head is not None:
            header["head"] = {"act": vars(self.head.act).copy(), "matrix": put_matrix("head/", self.head.matrix)}
            arrays["head/bias"] = self.head.bias.astype(np.int64)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("header.json", json.dumps(header, indent=1))
            for name, arr in arrays.items():
                b = io.BytesIO()
                np.save(b, arr, allow_pickle=False)
                zf.writestr(name + ".npy", b.getvalue())
        write_atomically(path, buf.getvalue())

    @classmethod
    def load(cls, path) -> "QModel":
        """Read a QModel file; raise :class:`QModelFormatError` for anything else."""
        path = Path(path)
        if not path.exists():
            raise QModelFormatError(f"{path}: no such file")
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError):
            raise QModelFormatError(
                f"{path} is not a deltarnn QModel file (make one with `deltarnn quantize`)") from None
        try:
            with zf:
                if zf.testzip() is not None:
                    raise zipfile.BadZipFile("CRC mismatch")
                try:
                    header = json.loads(zf.read("header.json"))
                except KeyError:
                    raise QModelFormatError(
                        f"{path} is a zip file but not a deltarnn QModel (no header.json)") from None
                if not isinstance(header, dict) or header.get("magic") != MAGIC:
                    raise QModelFormatError(f"{path} is not a deltarnn QModel file (wrong magic)")
                version = header.get("format_version")
                if not isinstance(version, int) or version > FORMAT_VERSION:
                    raise QModelFormatError(
                        f"{path} has QModel format version {version}, newer than this deltarnn reads "
                        f"({FORMAT_VERSION}): upgrade deltarnn")

                def arr(name: str) -> np.ndarray:
                    return np.load(io.BytesIO(zf.read(name + ".npy")), allow_pickle=False)

                def get_matrix(prefix: str, h: dict) -> QMatrix:
                    return QMatrix(arr(prefix + "weights").astype(np.int64), int(h["wbits"]),
                                   arr(prefix + "scale"), arr(prefix + "mult"), int(h["shift"]))

                layers = []
                for i, lh in enumerate(header["layers"]):
                    dirs = []
                    for j, dh in enumerate(lh["directions"]):
                        p = f"l{i}/d{j}/"
                        dirs.append(QDirection(
                            get_matrix(p + "x/", dh["x"]),
                            get_matrix(p + "h/", dh["h"]) if dh["h"] else None,
                            {n: arr(p + "v/" + n) for n in dh["vectors"]},
                            tuple(dh["highway"]) if dh["highway"] else None))
                    layers.append(QLayer(QActivation(**lh["x_act"]),
                                         QActivation(**lh["h_act"]) if lh["h_act"] else None, dirs))
                head = None
                if header["head"] is not None:
                    hh = header["head"]
                    head = QHead(QActivation(**hh["act"]), get_matrix("head/", hh["matrix"]), arr("head/bias"))
                model = cls(header["cell"], header["input_size"], header["hidden_size"],
                            header["bidirectional"], layers, head, header["float_params"], header["meta"])
        except QModelFormatError:
            raise
        except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, TypeError, OSError, EOFError) as e:
            raise QModelFormatError(f"{path} is damaged ({type(e).__name__}: {e}): quantize the model again") from None
        model.validate(path)
        return model

    def validate(self, source="QModel") -> None:
        """Check shapes and ranges; raise :class:`QModelFormatError` on nonsense."""

        def bad(msg):
            raise QModelFormatError(f"{source} is inconsistent: {msg}")

        if self.cell not in CELLS:
            bad(f"unknown cell {self.cell!r}")
        hs = self.hidden_size
        for i, layer in enumerate(self.layers):
            n_in = self.input_size if i == 0 else self.directions * hs
            if len(layer.directions) != self.directions:
                bad(f"layer {i} has {len(layer.directions)} directions")
            for d in layer.directions:
                x_rows = X_GATES[self.cell] * hs + (hs if self.cell == "sru" and d.highway is None else 0)
                if d.x.weights.shape != (x_rows, n_in):
                    bad(f"layer {i} x matrix has shape {d.x.weights.shape}, expected {(x_rows, n_in)}")
                if H_GATES[self.cell] and (d.h is None or d.h.weights.shape != (H_GATES[self.cell] * hs, hs)):
                    bad(f"layer {i} h matrix has the wrong shape")
                for m in (d.x, d.h):
                    if m is None:
                        continue
                    if not C.MIN_BITS <= m.wbits <= C.MAX_BITS or np.abs(m.weights).max(initial=0) > C.qmax(m.wbits):
                        bad(f"layer {i} weights exceed {m.wbits} bits")
                    if m.mult.shape != (m.rows,) or m.mult.min(initial=0) < 0 or m.mult.max(initial=0) >= 1 << C.MULT_BITS:
                        bad(f"layer {i} multipliers out of range")
        need = self.accumulator_bits()
        if need > C.ACC_BITS:
            bad(f"needs {need}-bit accumulators, more than {C.ACC_BITS}")


def delay_inputs(x: np.ndarray, delay: int) -> np.ndarray:
    """``x`` ``(..., T, F)`` followed by ``delay`` zero frames: what a model with that output delay is run on."""
    if delay == 0:
        return x
    pad = np.zeros((*x.shape[:-2], delay, x.shape[-1]), dtype=x.dtype)
    return np.concatenate([x, pad], axis=-2)


def align_outputs(y: np.ndarray, delay: int) -> np.ndarray:
    """Outputs ``(..., T + delay, C)`` of :func:`delay_inputs`'s input to ``(..., T, C)``, one per input frame."""
    return y[..., delay:, :]
