"""Cycle model of the core: the exact cycles of every STEP.

A STEP is one accept cycle followed by a sequence of phases; a phase is one
``*_GO`` cycle that starts a unit, the unit's own cycles, and the cycle in
which the sequencer sees its ``done``:

==============  ============================================================  ====================
phase           cycles                                                        when
==============  ============================================================  ====================
encode          :func:`fused_encode_cycles`, or ``n + E_L + 1``               x path of layers > 0, the head
                at 2 lanes or fewer
MxV             ``deltas * S * pass(ceil(rows / P)) + L + 1``                 every path
h encode        ``max(0, encode - MxV)`` of the same layer's x path, or       every h path
                ``n + E_L + 1`` at 2 lanes or fewer
cell update     ``run_cycles(cell, H / E, P, E) + CellEngine.LATENCY + 1``    every layer
output          ``run_cycles(HEAD_OUT, K, P) + CellEngine.LATENCY + 1``       with a head of K classes,
                ``run_cycles(H_OUT, H, P) + CellEngine.LATENCY + 1``          without
==============  ============================================================  ====================

Above :data:`~deltarnn.hw.encoder.CONCURRENT_LANES` lanes a layer's h path is
encoded while its x path's MxV runs (both start in the MxV's GO cycle, and
the h path's MxV starts after both are done): its phase is only what the
encode takes beyond the MxV; and where the cell's program leaves the encoder
room on the reference memory (:func:`deltarnn.hw.engine.fuses_encoder`: every
cell now), the input of the next layer's x path, or of the head, is encoded as
the cell update writes it: its phase is only the encoder's latency after the
update's last write. ``E_L`` is the encoder's latency
(:meth:`deltarnn.hw.encoder.DeltaEncoder.latency`: 7, and 8 above
:data:`~deltarnn.hw.engine.WIDE_LANES` lanes, whose state words reach it registered), ``n``
the vector length the encoder scans (H), ``L`` the MxV's latency
(:meth:`deltarnn.hw.mxv.DeltaMxV.latency`: 9, and 10 above
:data:`~deltarnn.hw.engine.WIDE_LANES` lanes, where the banked weight memory's word has a stage
of its own), ``rows`` the rows of
the path's matrix, ``pass`` :func:`deltarnn.hw.mxv.pass_cycles` (the words, but 4 for 2
or 3 at up to 8 lanes), ``S`` its weight slices
(:func:`deltarnn.spec.memory_map.weight_slices`: 1 unless its weights are wider than the
core's slots), and :func:`deltarnn.hw.engine.run_cycles` ``(n - 1) * ii + depth``
for ``n`` items of a program's schedule at ``P`` lanes (and, where the GRU's and LSTM's requantizations
keep items of their accumulator words above :data:`~deltarnn.hw.engine.WIDE_LANES` lanes, the cycles the
engine stalls for two of their reads in one cycle, :func:`deltarnn.hw.engine.cache_stalls`: none where ``H``
is a multiple of ``2 E``); the cell update's items are ``E`` neurons each (the
engine's lanes, :attr:`~deltarnn.spec.memory_map.DeviceParams.engine_width`; the cell program's ``ii`` at
least ``E``), and a fused encode takes the last item's ``E`` values one per cycle. The output phase assumes
the response stream is always ready. ``STEP_CYCLES`` (a core register) measures the same quantity.
"""

from __future__ import annotations

from deltarnn.spec.memory_map import H_BLOCKS, X_BLOCKS, ceil_div, weight_slices

from deltarnn.hw.core import feeds_encoder, overlaps_encodes
from deltarnn.hw.encoder import DeltaEncoder
from deltarnn.hw.engine import CELL_PROGRAMS, H_OUT, HEAD_OUT, WIDE_LANES, CellEngine, run_cycles, schedule
from deltarnn.hw.mxv import DeltaMxV, pass_cycles

ACCEPT = 1


def encode_cycles(n: int, lanes: int = 1) -> int:
    return n + DeltaEncoder.latency(lanes > WIDE_LANES) + 1


def mxv_cycles(deltas: int, rows: int, lanes: int, slices: int = 1) -> int:
    return deltas * slices * pass_cycles(ceil_div(rows, lanes), lanes) + DeltaMxV.latency(lanes > WIDE_LANES) + 1


def engine_cycles(items: int, program, lanes: int, width: int = 1) -> int:
    return run_cycles(program, items, lanes, width) + CellEngine.LATENCY + 1


def fused_encode_cycles(cell: str, lanes: int, width: int = 1) -> int:
    """Cycles an encode fed by a cell update of ``width`` engine lanes adds to it: the encoder's latency after
    the last element of the run's last ``h`` write (``width`` elements, one per cycle), beyond the run's own end."""
    sch = schedule(CELL_PROGRAMS[cell], lanes, width)
    last_h = max(sl.write for sl in sch.slots if sl.ins[:2] == ("st", "h"))
    return max(0, last_h + width - 1 + DeltaEncoder.latency(lanes > WIDE_LANES) - sch.depth)


def output_timing(classes: int, hidden: int, lanes: int) -> tuple[int, int]:
    """When a STEP's outputs appear: ``(tail, gap)``.

    The first output is valid ``tail`` cycles before the cycle count of the
    step ends (``step_cycles - tail`` cycles after the STEP is accepted, as
    the co-simulation's testbench counts), each next one ``gap`` cycles after
    the previous one is taken (the response stream always ready). Above
    :data:`~deltarnn.hw.engine.WIDE_LANES` lanes the responses pass a FIFO in a block RAM and its
    output register, three cycles later, and wait there (the next one valid as soon as the previous is taken).
    """
    program, items = (HEAD_OUT, classes) if classes else (H_OUT, hidden)
    sch = schedule(program, lanes)
    out = next(sl for sl in sch.slots if sl.ins[0] == "out")
    phase = engine_cycles(items, program, lanes)
    # the output phase: the GO cycle, then the engine's run, whose first output is at the out slot's offset
    return phase - (1 + out.start) + 1 - 3 * int(lanes > WIDE_LANES), sch.ii - 1


def x_rows(cell: str, hidden: int, sru_identity: bool) -> int:
    return (X_BLOCKS[cell] - (1 if cell == "sru" and sru_identity else 0)) * hidden


def step_phases(cell: str, lanes: int, hidden: int, classes: int, deltas: dict[str, int],
                sru_identity: list[bool] | None = None, slices: dict[str, int] | None = None, width: int = 1
                ) -> list[tuple[str, int]]:
    """Phases of one STEP and their cycles, in order.

    ``deltas`` maps each path (``"0.x"``, ``"0.h"``, ..., ``"head.x"``) to
    the deltas it processes in this step; its layer paths give the layer
    count. ``slices`` maps a path to its matrix's weight slices (default 1).
    ``width``: the engine's lanes ``E`` (``hidden`` a multiple of it).
    """
    slices = slices or {}
    layers = 1 + max(int(k.split(".")[0]) for k in deltas if k[0].isdigit())
    phases = [("accept", ACCEPT)]
    # the x path of a layer > 0 and the head: encoded as the cell update before them makes their input, or
    # by a scan after it
    next_encode = (fused_encode_cycles(cell, lanes, width) if feeds_encoder(cell, lanes)
                   else encode_cycles(hidden, lanes))
    for i in range(layers):
        if i > 0:
            phases.append((f"{i}.x encode", next_encode))
        ident = bool(sru_identity[i]) if sru_identity else False
        x_mxv = mxv_cycles(deltas[f"{i}.x"], x_rows(cell, hidden, ident), lanes, slices.get(f"{i}.x", 1))
        phases.append((f"{i}.x MxV", x_mxv))
        if H_BLOCKS[cell]:
            phases.append((f"{i}.h encode", max(0, encode_cycles(hidden, lanes) - x_mxv)
                           if overlaps_encodes(cell, lanes) else encode_cycles(hidden, lanes)))
            phases.append((f"{i}.h MxV", mxv_cycles(deltas[f"{i}.h"], H_BLOCKS[cell] * hidden, lanes,
                                                    slices.get(f"{i}.h", 1))))
        phases.append((f"{i} cell", engine_cycles(hidden // width, CELL_PROGRAMS[cell], lanes, width)))
    if classes:
        phases.append(("head encode", next_encode))
        phases.append(("head MxV", mxv_cycles(deltas["head.x"], classes, lanes, slices.get("head.x", 1))))
        phases.append(("output", engine_cycles(classes, HEAD_OUT, lanes)))
    else:
        phases.append(("output", engine_cycles(hidden, H_OUT, lanes)))
    return phases


def step_cycles(*args, **kwargs) -> int:
    """Total cycles of one STEP (see :func:`step_phases` for the arguments)."""
    return sum(c for _, c in step_phases(*args, **kwargs))


def model_slices(qm, wmem_bits: int) -> dict[str, int]:
    """Weight slices of every path of ``qm`` on a core with ``wmem_bits`` slots."""
    return {name: weight_slices(qm.matrices(name)[0].wbits, wmem_bits) for name in qm.paths()}


def model_step_cycles(qm, params, step_deltas: dict, seq: int = 0) -> list[int]:
    """Predicted cycles of every step of sequence ``seq`` from the golden model's ``step_deltas``,
    on a core with :class:`~deltarnn.spec.memory_map.DeviceParams` ``params``."""
    ident = [d.directions[0].highway is not None for d in qm.layers]
    slices = model_slices(qm, params.wmem_bits)
    lanes = params.lanes
    steps = next(iter(step_deltas.values())).shape[1]
    return [step_cycles(qm.cell, lanes, qm.hidden_size, qm.num_classes,
                        {k: int(v[seq, t]) for k, v in step_deltas.items()}, ident, slices, params.engine_width)
            for t in range(steps)]
