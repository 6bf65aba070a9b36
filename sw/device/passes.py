"""Host passes: a model bigger than the device runs direction by direction and layer by layer.

A device runs unidirectional models of at most ``max_layers`` layers. A
model with more layers runs in *stages* of consecutive layers, each stage
a model of its own that the host loads, runs over every sequence and whose
last layer's ``h`` (the device's outputs without a head) becomes the next
stage's input: the host quantizes it with the next layer's input quantizer
and delta-encodes it (:func:`deltarnn.device.image.deltas_of`), exactly as
the core's encoder between two layers does. A bidirectional layer is a
stage of two passes, the forward direction and the backward one (its
sequences reversed in time), whose outputs the host joins as the golden
model does. The head of a bidirectional model needs both directions at
every step, so it runs on the host, with the golden model's arithmetic.
Every integer is the golden model's (``tests/device/test_driver.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deltarnn.device.image import DeviceFitError, check_fits
from deltarnn.quant import golden
from deltarnn.quant.qmodel import QLayer, QModel
from deltarnn.spec import contract as C
from deltarnn.spec.memory_map import DeviceParams

__all__ = ["Pass", "Stage", "head_on_host", "join", "part", "plan", "stage_inputs"]


@dataclass(frozen=True)
class Pass:
    """One model the device runs over every sequence: one direction of consecutive layers."""

    model: QModel
    reverse: bool     #: sequences run backwards in time (the backward direction)


@dataclass(frozen=True)
class Stage:
    """Layers ``first .. first + len(layers) - 1`` of the model: one pass per direction."""

    first: int
    passes: tuple[Pass, ...]


def part(qm: QModel, first: int, count: int, direction: int, head: bool) -> QModel:
    """Layers ``first .. first + count - 1`` of ``qm``, one direction, as a unidirectional model (with the head)."""
    layers = [QLayer(layer.x_act, layer.h_act, [layer.directions[direction]])
              for layer in qm.layers[first:first + count]]
    return QModel(qm.cell, layers[0].directions[0].x.cols, qm.hidden_size, False, layers,
                  qm.head if head else None, qm.float_params, {"part_of": qm.meta.get("name", ""), "first": first})


def plan(qm: QModel, params: DeviceParams) -> list[Stage]:
    """The stages that run ``qm`` on a device built with ``params``: one stage of one pass when it fits.

    Raises
    ------
    deltarnn.device.image.DeviceFitError
        If a part still does not fit (a hidden size, an input, a width beyond the device's).
    """
    if not qm.bidirectional:
        try:
            check_fits(qm, params)
            return [Stage(0, (Pass(qm, False),))]
        except DeviceFitError:
            if qm.num_layers <= params.max_layers:
                raise
    per = 1 if qm.bidirectional else params.max_layers
    stages = []
    for first in range(0, qm.num_layers, per):
        count = min(per, qm.num_layers - first)
        last = first + count == qm.num_layers
        passes = tuple(Pass(part(qm, first, count, d, last and not qm.bidirectional), d == 1)
                       for d in range(qm.directions))
        for p in passes:
            try:
                check_fits(p.model, params)
            except DeviceFitError as e:
                raise DeviceFitError(f"{e}, even run layer by layer (layers {first}..{first + count - 1} "
                                     f"as one pass)") from None
        stages.append(Stage(first, passes))
    return stages


def stage_inputs(qm: QModel, stage: Stage, values: np.ndarray) -> np.ndarray:
    """The integers of a stage's first layer's input path, ``(batch, time, n)``: ``values`` are the float
    inputs for the first stage, the previous stage's joined outputs (fixed point) for the others."""
    act = qm.layers[stage.first].x_act
    return golden.quantize_path_input(values, act, float_input=stage.first == 0)


def join(stage: Stage, outputs: list[np.ndarray]) -> np.ndarray:
    """A stage's output ``(batch, time, n)`` from its passes' (each in its own time order)."""
    parts = [o[:, ::-1] if p.reverse else o for p, o in zip(stage.passes, outputs)]
    return np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


def head_on_host(qm: QModel, values: np.ndarray) -> np.ndarray:
    """The head of ``qm`` over the last layer's outputs ``(batch, time, n)``, as the golden model computes it."""
    head = qm.head
    q = golden.quantize_path_input(values, head.act, float_input=False)
    ref, _ = golden.delta_encode(q, head.act.theta)
    return C.fx_add(golden.matvec_fx(ref, head.matrix).astype(np.int64), head.bias)


def needs_host_head(qm: QModel) -> bool:
    return qm.head is not None and qm.bidirectional
