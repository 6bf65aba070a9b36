"""CellEngine: the element-wise phase, a cell's micro-program software-pipelined over the neurons.

Each cell type's update (``docs/datapath.md`` section 6) is written below as
a short program over 16-bit values. The engine does not step through it
one instruction at a time: :func:`schedule` places every instruction of
one neuron at a fixed cycle offset so that a new neuron can start every
``ii`` cycles (modulo scheduling), where ``ii`` is the number of times the
program uses its busiest memory port. The neurons' programs overlap: the
engine updates one neuron per ``ii`` cycles, and a run of ``n`` neurons
takes ``(n - 1) * ii + depth`` cycles (:func:`run_cycles`). Only the
operations a program needs become hardware; the requantizer, the fixed-point
multipliers and the activation tables are shared between the instructions
that use them, in the cycles the schedule gives each.

Instructions (``k`` is the neuron being updated, ``H`` the hidden size):

==========================  =======  ==================================================
instruction                 latency  effect
==========================  =======  ==================================================
``("rq", d, path, blk)``    6 (9)    ``R[d] = requantize(acc[path][blk*H + k], mult, shift[path])``
``("hw", d)``               6 (9)    SRU highway: identity: ``requantize(ref_x[k], hw_mult, hw_shift)``,
                                     projection: ``("rq", d, "x", 3)``
``("vec", d, blk)``         3 (4)    ``R[d] = vec[blk*H + k]``
``("ld", d, s)``            3 (4)    ``R[d] = state s ("h" or "c") [k]``
``("add", d, a, b[, c])``   1        ``R[d] = fx_add(R[a], R[b][, R[c]])``
``("mul", d, a, b)``        2 (3)    ``R[d] = fx_mul(R[a], R[b])``
``("omin", d, a)``          1        ``R[d] = ONE - R[a]``
``("relu", d, a)``          1        ``R[d] = max(R[a], 0)``
``("sig", d, a)``           2 (5)    ``R[d] = sigmoid(R[a])`` (ROM)
``("tanh", d, a)``          2 (5)    ``R[d] = tanh(R[a])`` (ROM)
``("st", s, a)``            1        ``state s [k] = R[a]``
``("out", a)``              1        emit ``R[a]`` on ``out`` (at most :data:`WIDE_LANES` lanes the engine
                                     waits while ``out.ready`` is low; above, never: :func:`out_ii`)
==========================  =======  ==================================================

(in brackets: above :data:`WIDE_LANES` lanes, :func:`latency_of`)

The cell program runs on ``E`` neurons at once (the core's
:attr:`~deltarnn.spec.memory_map.DeviceParams.engine_width`): an item is
``E`` consecutive neurons, every instruction runs in ``E`` lanes, and the
multiplier, vector and state memories hold ``E`` elements per word (the
accumulator word, ``P`` lanes, holds ``P / E`` items). A run of ``H``
neurons is ``H / E`` items. The output programs run on one element per
item, the lane of each word selected after its read.

Above :data:`WIDE_LANES` lanes the GRU's and LSTM's requantizations keep
:data:`CACHE_ITEMS` items of the accumulator word they read, a register of
``2 E`` accumulators per instruction (:func:`caches_accumulators`): an
instruction reads the accumulator memory every second item, so the
accumulator port no longer bounds ``ii`` at 6 and 8 reads per item, and two
requantizer copies, each with a multiplier port of its own, take an item
every 4 cycles (the vector memory's 4 reads). The schedule puts the
instructions' reads in different cycles of two items; where a block's rows
start in the middle of a word pair (a hidden size that is not a multiple of
``2 E`` in the word, :func:`cache_reads`) two reads can meet in one cycle all
the same, and the engine stalls a cycle (:func:`cache_stalls`, which the
cycle model adds).

Every memory read takes its address from a register (computed in the
instruction's first cycle, read in the next, data in the one after): no
address arithmetic lies between a register and the memories' address pins.
The registers ``R[0..7]`` name values within one neuron's program; each
instruction's result is a value of its own in hardware (a register, or a
short chain of them where a value lives longer than ``ii`` cycles), so
reusing a register name costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from deltarnn.spec import contract as C
from deltarnn.spec.memory_map import SHIFT_BITS

from deltarnn.hw.activation import Activation

LSTM = [
    ("rq", 0, "x", 0), ("rq", 1, "h", 0), ("vec", 2, 0), ("add", 0, 0, 1, 2), ("sig", 3, 0),
    ("rq", 0, "x", 1), ("rq", 1, "h", 1), ("vec", 2, 1), ("add", 0, 0, 1, 2), ("sig", 4, 0),
    ("rq", 0, "x", 2), ("rq", 1, "h", 2), ("vec", 2, 2), ("add", 0, 0, 1, 2), ("tanh", 5, 0),
    ("rq", 0, "x", 3), ("rq", 1, "h", 3), ("vec", 2, 3), ("add", 0, 0, 1, 2), ("sig", 6, 0),
    ("ld", 0, "c"), ("mul", 0, 4, 0), ("mul", 1, 3, 5), ("add", 0, 0, 1), ("st", "c", 0),
    ("tanh", 1, 0), ("mul", 1, 6, 1), ("st", "h", 1),
]
GRU = [
    ("rq", 0, "x", 0), ("rq", 1, "h", 0), ("vec", 2, 0), ("add", 0, 0, 1, 2), ("sig", 3, 0),   # r
    ("rq", 0, "x", 1), ("rq", 1, "h", 1), ("vec", 2, 1), ("add", 0, 0, 1, 2), ("sig", 4, 0),   # z
    ("rq", 0, "h", 2), ("vec", 1, 3), ("add", 0, 0, 1), ("mul", 0, 3, 0),                      # r*(h_n + b_hn)
    ("rq", 1, "x", 2), ("vec", 2, 2), ("add", 1, 1, 2), ("add", 0, 1, 0), ("tanh", 5, 0),      # n
    ("omin", 1, 4), ("mul", 1, 1, 5), ("ld", 2, "h"), ("mul", 2, 4, 2), ("add", 1, 1, 2), ("st", "h", 1),
]
LIGRU = [
    ("rq", 0, "x", 0), ("rq", 1, "h", 0), ("vec", 2, 0), ("add", 3, 0, 1, 2),                  # a
    ("rq", 0, "x", 1), ("rq", 1, "h", 1), ("vec", 2, 1), ("add", 0, 0, 1, 2), ("sig", 4, 0),   # z
    ("relu", 3, 3), ("ld", 0, "h"), ("mul", 0, 4, 0), ("omin", 1, 4), ("mul", 1, 1, 3),
    ("add", 0, 0, 1), ("st", "h", 0),
]
SRU = [  # vec blocks: 0 bias_f, 1 bias_r, 2 vf, 3 vr; x blocks: 0 x~, 1 f, 2 r, 3 projection
    ("ld", 5, "c"),
    ("vec", 0, 2), ("mul", 0, 0, 5), ("rq", 1, "x", 1), ("vec", 2, 0), ("add", 0, 1, 0, 2), ("sig", 3, 0),
    ("vec", 0, 3), ("mul", 0, 0, 5), ("rq", 1, "x", 2), ("vec", 2, 1), ("add", 0, 1, 0, 2), ("sig", 4, 0),
    ("mul", 0, 3, 5), ("omin", 1, 3), ("rq", 2, "x", 0), ("mul", 1, 1, 2), ("add", 5, 0, 1), ("st", "c", 5),
    ("hw", 0), ("mul", 1, 4, 5), ("omin", 2, 4), ("mul", 2, 2, 0), ("add", 1, 1, 2), ("st", "h", 1),
]
CELL_PROGRAMS = {"lstm": LSTM, "gru": GRU, "ligru": LIGRU, "sru": SRU}


def fuses_encoder(program, lanes: int, width: int = 1) -> bool:
    """Whether the core can encode a run's new ``h`` as the engine writes it (the
    :class:`~deltarnn.hw.encoder.DeltaEncoder`'s stream scan, beside the run), in a core of ``lanes``
    lanes: the program writes ``h``, and the encoder's reference read, in the cycle of each ``h``
    write, never falls in a cycle in which the program reads the reference memory itself (the SRU's
    highway, a cycle after its request, :meth:`CellEngine._ports`) in the run's ``ii`` (``width``: the
    engine's lanes)."""
    sch = schedule(program, lanes, width)

    def reference_reads(writes_h: bool) -> set[int]:
        return {(sl.start + at) % sch.ii for sl in sch.slots if (sl.ins[:2] == ("st", "h")) == writes_h
                for port, at in _claims(sl.ins) if port == "ref_read"}

    writes = reference_reads(True)
    return bool(writes) and not writes & reference_reads(False)


#: Output of a head: requantized accumulator plus bias, per class.
HEAD_OUT = [("rq", 0, "x", 0), ("vec", 1, 0), ("add", 0, 0, 1), ("out", 0)]
#: Output without a head: the last layer's h.
H_OUT = [("ld", 0, "h"), ("out", 0)]

#: The widest datapath that selects from a block RAM's output, or decodes a write to it, in the
#: cycle it is read or written: above this many lanes a memory spans many blocks and a register
#: goes first (the requantizer registers the whole accumulator word before its lane select, the
#: core its weight writes). At or below it the register costs logic cells for nothing.
WIDE_LANES = 4

#: Cycles from an instruction's start until its result can be used, in a core of at most
#: :data:`WIDE_LANES` lanes (:func:`latency_of`).
LATENCY_OF = {"rq": 6, "hw": 6, "vec": 3, "ld": 3, "add": 1, "mul": 2, "omin": 1, "relu": 1,
              "sig": 2, "tanh": 2, "st": 1, "out": 1}


class Program(enum.Enum, shape=2):
    """Which program a run executes (the ``program`` input)."""

    CELL = 0
    HEAD_OUT = 1
    H_OUT = 2


# --- scheduling ---------------------------------------------------------------------------------

def _ports(ins) -> tuple[str, ...]:
    """The memory ports (and the output) an instruction uses in its first cycle; each can serve one per cycle."""
    op = ins[0]
    if op == "rq":
        return ("acc",)
    if op == "hw":
        return ("acc", "ref")
    if op == "vec":
        return ("vec",)
    if op == "ld":
        return (f"{ins[2]}_rd",)
    if op == "st":
        return (f"{ins[1]}_wr",)
    if op == "out":
        return ("out",)
    return ()


def _claims(ins, cached: bool = False) -> tuple[tuple[str, int], ...]:
    """The ports an instruction takes, each with its cycle offset from the instruction's start: its
    :func:`_ports` in its first cycle (but not the accumulator port for a requantization of a
    ``cached`` schedule, which reads it every :data:`CACHE_ITEMS` items, :func:`cache_reads`), and the reference
    memory's read: the SRU highway's a cycle after its request, the fused encoder's in the cycle of
    each ``h`` write (:func:`fuses_encoder`)."""
    claims = tuple((port, 0) for port in _ports(ins) if not (cached and port == "acc"))
    if ins[0] == "hw":
        claims += (("ref_read", 1),)
    if ins[:2] == ("st", "h"):
        claims += (("ref_read", 0),)
    return claims


#: Output programs of a core of at most :data:`WIDE_LANES` lanes start an item at most every OUT_II
#: cycles: fewer items in flight, less logic (an iCE40's logic cells), and still far faster than any
#: host link takes the outputs.
OUT_II = 2


def out_ii(lanes: int) -> int:
    """The least ``ii`` of an output program in a core of ``lanes`` lanes: :data:`OUT_II` at most
    :data:`WIDE_LANES` lanes, where the engine waits while ``out.ready`` is low (its reads every
    second cycle: a read's data waits at the memory's output, :meth:`CellEngine._ports`); 1 above,
    where it never waits: the core starts an output program only when its response FIFO has room
    for all of the run's outputs, so no ready signal reaches the engine's enables."""
    return OUT_II if lanes <= WIDE_LANES else 1


#: Instructions that run on a shared unit (the others have logic of their own).
SHARED = {"rq": "rq", "hw": "rq", "mul": "mul", "sig": "sig", "tanh": "tanh"}


@dataclass(frozen=True)
class Slot:
    """One instruction placed by :func:`schedule`."""

    ins: tuple
    start: int            #: cycle offset from the neuron's start
    latency: int
    unit: int             #: which copy of its shared unit (0 if none)
    sources: tuple        #: (index of the producing instruction, chain position) per operand value

    @property
    def write(self) -> int:
        """The cycle offset in which the result is written (it can be read from the next)."""
        return self.start + self.latency - 1


@dataclass(frozen=True)
class Schedule:
    """A program placed for software pipelining.

    ``ii``: cycles between the starts of successive neurons; ``depth``: cycles
    of one neuron's program from its start to its last write; ``units``:
    copies of each shared unit; ``chain``: per instruction, the registers its
    result needs (more than one when it lives longer than ``ii`` cycles);
    ``cached``: the requantizations keep items of the accumulator word they
    read (:func:`caches_accumulators`).
    """

    slots: tuple
    ii: int
    depth: int
    units: dict
    chain: tuple
    cached: bool = False


def _operands(ins) -> tuple[int, ...]:
    """Register numbers an instruction reads."""
    op = ins[0]
    if op == "add":
        return tuple(ins[2:])
    if op == "mul":
        return (ins[2], ins[3])
    if op in ("omin", "relu", "sig", "tanh"):
        return (ins[2],)
    if op == "st":
        return (ins[2],)
    if op == "out":
        return (ins[1],)
    return ()


def _defines(ins) -> int | None:
    return None if ins[0] in ("st", "out") else ins[1]


def latency_of(lanes: int) -> dict[str, int]:
    """:data:`LATENCY_OF` in a core of ``lanes`` lanes: above :data:`WIDE_LANES` every memory's output is
    registered as it leaves the memory (an ECP5 block RAM's own output register), a cycle more for the
    vector and state loads; the requantizer's product takes two cycles (two multiplier blocks' products,
    then their sum), and its accumulator lanes are selected from a register of the instruction's
    own (:func:`caches_accumulators`), three more; the multipliers' operands are registered (the
    multiplier block's input registers), one more; the activation tables register their input before the
    address's clamp and the clamped address before the table too, three more."""
    if lanes <= WIDE_LANES:
        return dict(LATENCY_OF)
    extra = {"rq": 3, "hw": 3, "vec": 1, "ld": 1, "mul": 1, "sig": 3, "tanh": 3}
    return {op: latency + extra.get(op, 0) for op, latency in LATENCY_OF.items()}


#: Cycles from a cached requantization's accumulator read request to the cycle its register holds the
#: read's items (the read, the block RAM's output register, the instruction's register): a cached schedule's
#: ``ii`` is at least this, so that an item's word never replaces the word the item before still uses.
CACHE_FILL = 4

#: Items of its accumulator word a cached requantization keeps (its register: ``CACHE_ITEMS * E``
#: accumulators): it reads the memory every ``CACHE_ITEMS`` items, so that the GRU's 6 and the LSTM's
#: 8 requantizations share the port at ``ii`` 4 (3 and 4 reads per item), with a register a quarter of
#: a 32-lane word.
CACHE_ITEMS = 2


def schedule(program, lanes: int, width: int = 1) -> Schedule:
    """The program's schedule in a core of ``lanes`` lanes, on items of ``width`` neurons: the
    :func:`modulo_schedule` with cached accumulator words where that lowers ``ii``
    (:func:`caches_accumulators`), computed once per program (the cycle model asks per step)."""
    return _best_schedule(tuple(tuple(ins) for ins in program), lanes, width)


@lru_cache(maxsize=None)
def _best_schedule(program: tuple, lanes: int, width: int) -> Schedule:
    plain = modulo_schedule(program, lanes, width)
    if not caches_accumulators(program, lanes, width):
        return plain
    cached = modulo_schedule(program, lanes, width, cached=True)
    # (at most two requantizer copies: a collision stalls one cycle, cache_stalls)
    return cached if cached.ii < plain.ii and cached.units.get("rq", 0) <= 2 else plain


def caches_accumulators(program, lanes: int, width: int) -> bool:
    """Whether the program's requantizations may keep :data:`CACHE_ITEMS` items of the accumulator word
    they read, in a core of ``lanes`` lanes on items of ``width`` neurons: a word holds ``P / E`` items'
    accumulators (at least :data:`CACHE_ITEMS`), so an
    instruction reads the memory only every :data:`CACHE_ITEMS` items (:func:`cache_reads`), and
    several instructions share the read port's cycles (the engine stalls a cycle where two of them
    read in the same one, :func:`cache_stalls`). Above :data:`WIDE_LANES` lanes (a register per
    instruction), in a cell program without the SRU highway (whose reference read shares the
    requantizer); not the output programs (one read per item, of one element: nothing to keep)."""
    return lanes > WIDE_LANES and lanes // width >= CACHE_ITEMS and not any(ins[0] in ("out", "hw") for ins in program)


@lru_cache(maxsize=None)
def modulo_schedule(program: tuple, lanes: int, width: int = 1, cached: bool = False) -> Schedule:
    """Modulo-schedule ``program``: the smallest ``ii`` its ports allow (at least :func:`out_ii` for an
    output program, and at least ``width``: the delta encoder fused to a cell update takes an item's
    ``width`` new h one per cycle), each instruction as early as possible, memory loads as late as their
    users allow.

    ``lanes``: the core's, whose latencies it takes (:func:`latency_of`).
    Dependences: an operand is read no earlier than its producer's result is
    written; a state write (``st s``) comes after the program's read of the
    same state (``ld s``) of the same neuron. Every memory port serves one
    instruction per cycle, so two instructions on one port start in
    different cycles modulo ``ii``; shared units get as many copies as their
    uses need at that ``ii``. ``cached``: the requantizations do not claim
    the accumulator port (:func:`caches_accumulators`; ``ii`` at least
    :data:`CACHE_FILL`).
    """
    latency = latency_of(lanes)
    uses: dict[str, int] = {}
    for ins in program:
        for port, _ in _claims(ins, cached):
            uses[port] = uses.get(port, 0) + 1
    ii = max(max(uses.values(), default=1), out_ii(lanes) if "out" in uses else 1, width, CACHE_FILL if cached else 1)
    unit_uses: dict[str, int] = {}
    for ins in program:
        if ins[0] in SHARED:
            unit_uses[SHARED[ins[0]]] = unit_uses.get(SHARED[ins[0]], 0) + 1
    units = {u: -(-n // ii) for u, n in unit_uses.items()}
    words = ii * CACHE_ITEMS if cached else ii    # cycles between an instruction's reads
    busy: dict[tuple, set] = {}          # (resource, copy) -> phases taken
    producer: dict[int, int] = {}        # register -> index of the instruction that last wrote it
    loads: dict[str, int] = {}           # state -> index of its ld
    placed: list[tuple] = []             # (ins, start, latency, unit, source indices)
    for i, ins in enumerate(program):
        op = ins[0]
        if op not in latency:
            raise ValueError(f"unknown instruction {ins!r}")
        srcs = []
        for r in _operands(ins):
            if r not in producer:
                raise ValueError(f"instruction {i} {ins!r} reads R{r} before any instruction writes it")
            srcs.append(producer[r])
        earliest = max((placed[j][1] + placed[j][2] for j in srcs), default=0)
        if op == "st" and ins[1] in loads:    # the read's memory cycle before the write's: no collision
            earliest = max(earliest, placed[loads[ins[1]]][1] + 2)
        unit_name = SHARED.get(op)
        # a cached requantization reads every CACHE_ITEMS items, every `words` cycles in step with the others'
        # where the blocks start at even items: none of them in the same cycle of that period
        word_read = cached and op == "rq"
        start = earliest
        for _ in range(words):
            phase = start % ii
            if all((phase + at) % ii not in busy.get((p, 0), set()) for p, at in _claims(ins, cached)) and \
                    not (word_read and start % words in busy.get(("acc_word", 0), set())):
                copies = range(units[unit_name]) if unit_name else [0]
                free = [u for u in copies if phase not in busy.get((unit_name, u), set())]
                if free:
                    break
            start += 1
        else:
            raise ValueError(f"instruction {i} {ins!r}: no cycle of ii = {ii} has its ports free")
        unit = free[0]
        for p, at in _claims(ins, cached):
            busy.setdefault((p, 0), set()).add((start + at) % ii)
        if word_read:
            busy.setdefault(("acc_word", 0), set()).add(start % words)
        if unit_name:
            busy.setdefault((unit_name, unit), set()).add(start % ii)
        placed.append((ins, start, latency[op], unit, tuple(srcs)))
        if op == "ld":
            loads[ins[2]] = i
        d = _defines(ins)
        if d is not None:
            producer[d] = i
    # memory loads move as late as their users and their port allow: a value that waits in a
    # register longer than ii cycles costs a register per ii
    for i in reversed(range(len(placed))):
        ins, start, lat, unit, srcs = placed[i]
        users = [pl[1] for pl in placed if i in pl[4]]
        if ins[0] not in ("vec", "ld") or not users:
            continue
        port = _ports(ins)[0]
        taken = busy[(port, 0)] - {start % ii}
        if ins[0] == "ld":   # a state read stays before that state's write (in an earlier memory cycle)
            writes = [pl[1] for pl in placed if pl[0][0] == "st" and pl[0][1] == ins[2]]
            users += [w - 2 + lat for w in writes]
        latest = min(users) - lat
        best = max((s_ for s_ in range(start, latest + 1) if s_ % ii not in taken), default=start)
        busy[(port, 0)] = taken | {best % ii}
        placed[i] = (ins, best, lat, unit, srcs)
    chain = [1] * len(placed)
    slots = []
    for ins, start, lat, unit, srcs in placed:
        sources = []
        for j in srcs:
            write = placed[j][1] + placed[j][2] - 1
            pos = (start - write - 1) // ii       # the producer's writes since this neuron's one
            chain[j] = max(chain[j], pos + 1)
            sources.append((j, pos))
        slots.append(Slot(ins, start, lat, unit, tuple(sources)))
    depth = max(sl.start + sl.latency for sl in slots)
    return Schedule(tuple(slots), ii, depth, units, tuple(chain), cached)


def cache_reads(block: int, count: int, hidden: int, lanes: int, width: int) -> list[int]:
    """The items of a run of ``count`` over ``hidden`` neurons for which a cached requantization of row block
    ``block`` reads the accumulator memory: the first, then each after the items the last read keeps, its
    item and the next up to :data:`CACHE_ITEMS` in the same word of ``lanes`` accumulators (a block's
    rows start at ``block * hidden``; items never straddle words, as ``width`` divides ``hidden`` and
    ``lanes``)."""
    items, per_word, k = [], lanes // width, 0
    while k < count:
        items.append(k)
        k += min(CACHE_ITEMS, per_word - (block * hidden // width + k) % per_word)
    return items


@lru_cache(maxsize=None)
def cache_stalls(program: tuple, count: int, lanes: int, width: int) -> int:
    """Cycles a run of ``count`` items of a cached schedule stalls: in each cycle of the pipeline,
    the requantizations (on different units) that read the accumulator memory take its port one per
    cycle, the pipeline waiting for all but the first (:func:`cache_reads`). 0 for a schedule that is
    not cached."""
    sch = _best_schedule(program, lanes, width)
    if not sch.cached or count == 0:
        return 0
    hidden = count * width
    reads: dict[int, int] = {}          # pipeline cycle -> reads requested in it
    for sl in (sl for sl in sch.slots if sl.ins[0] == "rq"):
        for k in cache_reads(sl.ins[3], count, hidden, lanes, width):
            t = sl.start + k * sch.ii
            reads[t] = reads.get(t, 0) + 1
    return sum(n - 1 for n in reads.values())


def run_cycles(program, count: int, lanes: int, width: int = 1) -> int:
    """Cycles of a run of ``count`` items of ``width`` neurons, in a core of ``lanes`` lanes, from the cycle
    after ``start`` to the last write (0 for no items): ``(count - 1) * ii + depth``, and the
    :func:`cache_stalls` of a cached schedule."""
    if count == 0:
        return 0
    program = tuple(tuple(ins) for ins in program)
    sch = _best_schedule(program, lanes, width)
    return (count - 1) * sch.ii + sch.depth + cache_stalls(program, count, lanes, width)


# --- hardware -----------------------------------------------------------------------------------

def _sat16(v):
    return Mux(v > C.FX_MAX, C.FX_MAX, Mux(v < C.FX_MIN, C.FX_MIN, v))


class CellEngine(wiring.Component):
    """Runs a cell's micro-program for ``count`` neurons (or an output program), software-pipelined.

    Parameters
    ----------
    params : deltarnn.spec.memory_map.DeviceParams
        Cell type (selects the CELL program), sizes, widths and the engine's lanes ``E``
        (:attr:`~deltarnn.spec.memory_map.DeviceParams.engine_width`).
    broken_lane : int, optional
        Test-only fault injection (see :class:`deltarnn.hw.core.Core`).

    Members
    -------
    start : In(1)
        Pulse: run ``program`` for items ``k = 0 .. count-1`` (a cell program's item ``k`` is neurons
        ``k*E .. k*E + E - 1``, an output program's element ``k``).
    program : In(Program)
        The program to run (sampled with ``start``).
    count : In(range(max_hidden + 1))
        Number of items (``H / E`` for the cell program, outputs for the others; sampled with ``start``).
    hidden : In(range(max_hidden + 1))
        H: block stride of accumulator rows and vectors.
    acc_base_x, acc_base_h : In(range(acc_depth))
        Accumulator word bases of the x-path (or head) and h-path blocks.
    shift_x, shift_h : In(SHIFT_BITS)
        Requantization shifts of the two paths.
    vec_base, state_base, ref_base : In(range(depth))
        Bases of this layer's vectors, state (h, c) and x-path references.
    hw_mult, hw_shift, hw_identity : In(MULT_BITS), In(SHIFT_BITS), In(1)
        SRU highway from the references.
    busy, done : Out(1)
        ``done`` pulses in the cycle after the last write or output.
    acc_addr, acc_en, acc_data; mult_addr, mult_en, mult_data; vec_addr, vec_en, vec_data;
    h_rd_addr, h_rd_en, h_rd_data; c_rd_addr, c_rd_en, c_rd_data; ref_addr, ref_en, ref_data
        Synchronous read ports (data one cycle after the address; a port
        whose enable is low holds its data). The multiplier, vector and
        state ports' words hold ``E`` elements (``ArrayLayout``), element
        ``i`` of a memory in lane ``i mod E`` of word ``i // E``.
    mult1_addr, mult1_en, mult1_data
        Where the engine has two requantizer copies (:attr:`rq_units`; a cached GRU or LSTM schedule), the
        second copy's read port of the multiplier memory.
    h_wr_addr, h_wr_en, h_wr_data; c_wr_addr, c_wr_en, c_wr_data
        State write ports (whole words: an item's ``E`` neurons).
    h_rd_word : Out(ArrayLayout(signed(16), E))
        Above :data:`WIDE_LANES` lanes, the ``h`` read port's data registered in every cycle (the
        block RAM's output register), which the delta encoder's scans read too; else 0.
    out : Out(stream.Signature(signed(FX_BITS)))
        Outputs of the output programs.

    Latency and throughput: a run of ``count`` items takes exactly
    ``run_cycles(program, count, lanes, w) + LATENCY`` cycles from ``start`` to
    ``done`` (``w``: ``E`` for the cell program, else 1; with a cached schedule's :func:`cache_stalls`),
    plus, at most :data:`WIDE_LANES` lanes, one for every cycle ``out`` is valid and not ready (the
    whole pipeline waits; above, the engine ignores ``out.ready``: :func:`out_ii`); one item every
    ``schedule(program, lanes, w).ii`` cycles (at least ``E`` for the cell program: the fused encoder takes
    an item's new h one per cycle).
    """

    LATENCY = 1

    def __init__(self, params, broken_lane: int | None = None):
        self.p = params
        self.broken_lane = broken_lane
        p = params
        self.cell_program = CELL_PROGRAMS[p.cell]
        self.width = e = p.engine_width
        self.schedules = {code: schedule(prog, p.lanes, e if code == Program.CELL else 1)
                          for code, prog in self.programs().items()}
        #: Requantizer copies: each reads the multiplier memory through a port of its own.
        self.rq_units = max(s.units.get("rq", 0) for s in self.schedules.values())
        cell = self.schedules[Program.CELL]
        #: Per requantization of a cached cell schedule (:func:`caches_accumulators`), its register's index.
        self.caches = {i: n for n, i in enumerate(i for i, sl in enumerate(cell.slots) if sl.ins[0] == "rq")} \
            if cell.cached else {}
        fx = data.ArrayLayout(signed(C.FX_BITS), e)
        more_mult = {}
        for u in range(1, self.rq_units):
            more_mult.update({f"mult{u}_addr": Out(range(p.mult_words)), f"mult{u}_en": Out(1),
                              f"mult{u}_data": In(data.ArrayLayout(C.MULT_BITS, e))})
        super().__init__({**more_mult, 
            "start": In(1), "program": In(Program),
            "count": In(range(p.max_hidden + 1)), "hidden": In(range(p.max_hidden + 1)),
            "acc_base_x": In(range(p.acc_depth)), "acc_base_h": In(range(p.acc_depth)),
            "shift_x": In(SHIFT_BITS), "shift_h": In(SHIFT_BITS),
            "vec_base": In(range(p.vec_depth)), "state_base": In(range(p.state_depth)),
            "ref_base": In(range(p.ref_depth)),
            "hw_mult": In(C.MULT_BITS), "hw_shift": In(SHIFT_BITS), "hw_identity": In(1),
            "busy": Out(1), "done": Out(1),
            "acc_addr": Out(range(p.acc_depth)), "acc_en": Out(1), "acc_data": In(p.lanes * p.acc_bits),
            "mult_addr": Out(range(p.mult_words)), "mult_en": Out(1),
            "mult_data": In(data.ArrayLayout(C.MULT_BITS, e)),
            "vec_addr": Out(range(p.vec_words)), "vec_en": Out(1), "vec_data": In(fx),
            "h_rd_addr": Out(range(p.state_words)), "h_rd_en": Out(1), "h_rd_data": In(fx), "h_rd_word": Out(fx),
            "c_rd_addr": Out(range(p.state_words)), "c_rd_en": Out(1), "c_rd_data": In(fx),
            "ref_addr": Out(range(p.ref_depth)), "ref_en": Out(1), "ref_data": In(signed(p.abits)),
            "h_wr_addr": Out(range(p.state_words)), "h_wr_en": Out(1), "h_wr_data": Out(fx),
            "c_wr_addr": Out(range(p.state_words)), "c_wr_en": Out(1), "c_wr_data": Out(fx),
            "out": Out(stream.Signature(signed(C.FX_BITS))),
        })

    def programs(self) -> dict:
        return {Program.CELL: self.cell_program, Program.HEAD_OUT: HEAD_OUT, Program.H_OUT: H_OUT}

    def elaborate(self, platform):
        m = Module()
        p = self.p
        programs = self.programs()
        schedules = self.schedules
        max_ii = max(s.ii for s in schedules.values())
        max_depth = max(s.depth for s in schedules.values())
        n = Signal(range(p.max_hidden + 1))
        program = Signal(Program)
        phase = Signal(max_ii)     # one-hot: bit i in the i-th cycle of every ii
        issued = Signal(range(p.max_hidden + max_depth + 2))   # the neuron whose offset-0 cycle this phase is in
        stall = Signal()
        run = Signal()        # the pipeline advances this cycle
        m.d.comb += [self.busy.eq(0), run.eq(~stall)]
        # program == CELL (program's reset value), a register of its own: it reaches the read requests
        cell_running = Signal(init=1)
        # two requantizations' accumulator reads in the next cycle (a cached cell schedule): the engine stalls a
        # cycle, its memory reads and activation tables too (set a cycle ahead: a register, not the output
        # stream's ready, drives their enables)
        collision = Signal()
        units = self._units(m, schedules, run, cell_running, collision)

        # the neuron an instruction works on depends only on how many ii its offset spans, back: it is
        # issued - back, and it exists while live[back] (shifted in as each neuron starts)
        backs = range(max(sl.start // s.ii for s in schedules.values() for sl in s.slots) + 1)
        live = Signal(len(backs))
        neuron = {}
        for back in backs:
            k = Signal(range(p.max_hidden + 1), name=f"k{back}")
            m.d.comb += k.eq(issued - back)
            neuron[back] = (k, live[back])
        # one register pool for every program's values (one program runs at a time)
        pool_size = max(len(s.slots) for s in schedules.values())
        pool = [[[Signal(signed(C.FX_BITS), name=f"v{i}_{j}_{e}") for e in range(self.width)]
                 for j in range(max((s.chain[i] for s in schedules.values() if i < len(s.slots)), default=1))]
                for i in range(pool_size)]
        ports = self._ports(m, run, cell_running, units, collision)
        # a cached requantization's next row's lane in its word, whether it has read at all this run, and the
        # items its register still holds after the next: it reads the accumulator memory where it holds none
        # (cache_reads)
        cache_rows = {}
        for i in self.caches:
            block = schedules[Program.CELL].slots[i].ins[3]
            row, first = Signal(range(p.lanes), name=f"rq_row{i}"), Signal(name=f"rq_first{i}")
            left, reads = Signal(range(CACHE_ITEMS), name=f"rq_left{i}"), Signal(name=f"rq_reads{i}")
            m.d.comb += reads.eq(first | (left == 0))
            cache_rows[i] = (row, first, left, reads)
            with m.If(~self.busy):
                m.d.sync += [row.eq(self.hidden * block), first.eq(1), left.eq(0)]

        # the phase and the program of the next cycle: above WIDE_LANES lanes the shared units' inputs
        # select their operand with registers of their own, set a cycle ahead (not through the state, the
        # program and the phase, which reach every unit)
        phase_next, program_next = Signal.like(phase), Signal.like(program)
        m.d.comb += [phase_next.eq(phase), program_next.eq(program)]
        m.d.sync += [phase.eq(phase_next), program.eq(program_next), cell_running.eq(program_next == Program.CELL)]
        unit_inputs = {}      # id(unit input) -> (unit input, [(program, phase bit, value)])
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += [program_next.eq(self.program), phase_next.eq(1)]
                    m.d.sync += [n.eq(self.count), issued.eq(0), live.eq(1)]
                    with m.If(self.count == 0):
                        m.next = "DONE"
                    with m.Else():
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.Switch(program):
                    for code, sch in schedules.items():
                        with m.Case(code):
                            self._pipeline(m, sch, self.width if code == Program.CELL else 1, units, ports,
                                           neuron, pool, phase, phase_next, issued, live, n, run, stall, cache_rows,
                                           lambda unit_in, bit, value, code=code: unit_inputs.setdefault(
                                               id(unit_in), (unit_in, []))[1].append((code, bit, value)))
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        with m.If(ports["collision"]):       # two requantizations read the accumulator memory in one cycle
            m.d.comb += stall.eq(1)
        for i, (unit_in, uses) in enumerate(unit_inputs.values()):
            select = Signal(len(uses), name=f"unit_select{i}")
            # a unit only one program uses takes its operands whatever program runs (the others ignore it)
            one = len({code for code, _, _ in uses}) == 1
            if p.lanes > WIDE_LANES:      # registered (an iCE40 core has no logic cells for the registers)
                m.d.sync += select.eq(Cat(*[(one or program_next == code) & phase_next[bit] for code, bit, _ in uses]))
            else:
                m.d.comb += select.eq(Cat(*[(one or program == code) & phase[bit] for code, bit, _ in uses]))
            value = 0
            for j, (_, _, v) in enumerate(uses):
                value = Mux(select[j], v, value)
            m.d.comb += unit_in.eq(value)
        return m

    def _ports(self, m, run, cell_running, units: dict, collision) -> dict:
        """The memory ports' requests (set by the running program's instructions) and their address arithmetic.

        Every port computes its address once, from the request of the
        instruction whose cycle it is: ``en``, the element ``k`` (an item's
        first neuron), and for the accumulator and vector ports the row block
        (and the path). Read addresses and enables are registered (the read
        one cycle after the request); write addresses are not. Each read
        port's ``sel`` is the data's element ``k mod E`` (an output program's
        element; 0 in a cell program's items): its lane registered with the
        address and again with the read, as the memory holds its data.

        Each requantizer copy ``u`` has an accumulator request of its own (``acc``, ``acc1``, ...)
        and its own multiplier port. In a cached cell schedule a request reads the accumulator
        memory only where the instruction's register holds no more items (:func:`cache_reads`), into
        that register (:data:`CACHE_FILL` cycles later, whatever the pipeline does meanwhile); where two
        copies read in one cycle the lowest reads, the pipeline stalls a cycle (``collision``) and
        the next reads in it, the one served waiting.
        """
        p = self.p
        lanes_log2 = (p.lanes - 1).bit_length()
        e_log2 = p.engine_bits
        hidden = self.hidden
        hidden3 = Signal(range(3 * p.max_hidden + 1))
        m.d.comb += hidden3.eq(hidden + (hidden << 1))

        def block_rows(block):
            """``hidden * block`` for a block 0..3."""
            return Mux(block[1], Mux(block[0], hidden3, hidden << 1), Mux(block[0], hidden, 0))

        def low(value, bits):
            return value[:bits] if bits else Const(0, 1)

        acc_ports = [f"acc{u}" if u else "acc" for u in range(max(1, self.rq_units))]
        req = {}
        for port in (*acc_ports, "vec", "ref", "h_rd", "c_rd", "h_wr", "c_wr"):
            req[port] = dict(en=Signal(name=f"{port}_req"), k=Signal(range(p.max_hidden + 1), name=f"{port}_k"))
        for port in (*acc_ports, "vec"):
            req[port]["block"] = Signal(2, name=f"{port}_block")
        req["h_wr"]["data"] = [Signal(signed(C.FX_BITS), name=f"h_wr_req_data{e}") for e in range(self.width)]
        req["c_wr"]["data"] = [Signal(signed(C.FX_BITS), name=f"c_wr_req_data{e}") for e in range(self.width)]

        def registered_read(addr_out, en_out, addr, en, also=()):
            """A read's address and enable (and ``also``: (register, value) pairs) registered for the next
            cycle. Where the engine stalls (a cached cell program) the registers hold while it does and the
            read waits: the word read before it stays at the memory's output until the pipeline takes it (the
            output programs never stall above WIDE_LANES lanes, and read every second cycle at or below it)."""
            if not self.caches:
                m.d.sync += [addr_out.eq(addr), en_out.eq(en), *[a.eq(b) for a, b in also]]
                return
            en_reg = Signal(name=f"{en_out.name}_reg")
            with m.If(~collision):
                m.d.sync += [addr_out.eq(addr), en_reg.eq(en), *[a.eq(b) for a, b in also]]
            m.d.comb += en_out.eq(en_reg & ~collision)

        reads = []            # per copy: (wants to read, accumulator word address, cache index)
        for u, port in enumerate(acc_ports):
            acc = req[port]
            acc.update(h=Signal(name=f"{port}_h"), live=Signal(name=f"{port}_live"),
                       miss=Signal(name=f"{port}_miss"), pos=Signal(range(p.lanes // self.width), name=f"{port}_pos"),
                       cache=Signal(range(max(1, len(self.caches))), name=f"{port}_cache"))
            row = Signal(range(4 * p.max_hidden + 1), name=f"{port}_row")
            base = Signal(range(p.acc_depth), name=f"{port}_base")
            m.d.comb += [row.eq(block_rows(acc["block"]) + acc["k"]),
                         base.eq(Mux(acc["h"], self.acc_base_h, self.acc_base_x))]
            acc["lane"] = low(row, lanes_log2)
            mult_addr, mult_en = (self.mult_addr, self.mult_en) if u == 0 else \
                (getattr(self, f"mult{u}_addr"), getattr(self, f"mult{u}_en"))
            registered_read(mult_addr, mult_en, ((base << lanes_log2) + row) >> e_log2, acc["en"])
            addr = Signal(range(p.acc_depth), name=f"{port}_addr")
            m.d.comb += addr.eq(base + (row >> lanes_log2))
            want = acc["en"]
            if self.caches:       # (a cell program's request reads where its register is spent, stalled or not)
                served = acc["served"] = Signal(name=f"{port}_served")
                want = Mux(cell_running, acc["live"] & acc["miss"] & ~served, acc["en"])
            reads.append((want, addr, acc["cache"]))
        # two copies' reads in one cycle: a register, set a cycle ahead by the cell program (_pipeline)
        collision_next = Signal()
        m.d.sync += collision.eq(collision_next)
        grants = []
        for u, (want, addr, cache) in enumerate(reads):
            grant = Signal(name=f"{acc_ports[u]}_grant")
            m.d.comb += grant.eq(want & ~Cat(*[w for w, _, _ in reads[:u]]).any() if u else want)
            grants.append(grant)
        if self.caches:
            for port, grant in zip(acc_ports, grants):
                m.d.sync += req[port]["served"].eq(grant & collision)
            # the granted read's items into the instruction's register, CACHE_FILL cycles on: the read, the block
            # RAM's output register (rq_word), the instruction's register
            fill_en = [Signal(name=f"fill{i}_en") for i in range(CACHE_FILL - 1)]
            fill_at = [Signal(range(len(self.caches)), name=f"fill{i}_at") for i in range(CACHE_FILL - 1)]
            fill_pos = [Signal(range(p.lanes // self.width), name=f"fill{i}_pos") for i in range(CACHE_FILL - 1)]
            granted_at, granted_pos = reads[-1][2], req[acc_ports[-1]]["pos"]
            for (_, _, cache), grant, port in reversed(list(zip(reads[:-1], grants, acc_ports))):
                granted_at, granted_pos = Mux(grant, cache, granted_at), Mux(grant, req[port]["pos"], granted_pos)
            m.d.sync += [fill_en[0].eq(cell_running & Cat(*grants).any()), fill_at[0].eq(granted_at),
                         fill_pos[0].eq(granted_pos)]
            for stage in (fill_en, fill_at, fill_pos):
                m.d.sync += [f.eq(g) for f, g in zip(stage[1:], stage)]
            # the item the read is for and the next CACHE_ITEMS - 1 of the word (those beyond it unused)
            item_bits = self.width * p.acc_bits
            items = [units["rq_word"].word_select(j, item_bits) for j in range(p.lanes // self.width)]
            items += [Const(0, item_bits)] * (CACHE_ITEMS - 1)
            window = Cat(*[Array(items)[fill_pos[-1] + w] for w in range(CACHE_ITEMS)])
            with m.If(fill_en[-1]):
                with m.Switch(fill_at[-1]):
                    for i, cache in enumerate(units["rq_caches"]):
                        with m.Case(i):
                            m.d.sync += cache.eq(window)
        acc_addr = reads[-1][1]
        for (_, addr, _), grant in reversed(list(zip(reads[:-1], grants))):
            acc_addr = Mux(grant, addr, acc_addr)
        vec = req["vec"]
        vec_el = Signal(range(p.vec_depth + 4 * p.max_hidden))
        m.d.comb += vec_el.eq(self.vec_base + block_rows(vec["block"]) + vec["k"])
        m.d.sync += [self.acc_addr.eq(acc_addr), self.acc_en.eq(Cat(*grants).any()),
                     self.ref_addr.eq(self.ref_base + req["ref"]["k"]), self.ref_en.eq(req["ref"]["en"])]
        req["collision"], req["collision_next"] = collision, collision_next
        reads = {"vec": (vec_el, self.vec_addr, self.vec_en, self.vec_data, vec["en"])}
        for port in ("h_rd", "c_rd"):
            el = Signal(range(p.state_depth + p.max_hidden + 1), name=f"{port}_el")
            m.d.comb += el.eq(self.state_base + req[port]["k"])
            reads[port] = (el, getattr(self, f"{port}_addr"), getattr(self, f"{port}_en"),
                           getattr(self, f"{port}_data"), req[port]["en"])
        for port, (el, addr_out, en, rd_data, request) in reads.items():
            at_addr, at_data = Signal(max(1, e_log2), name=f"{port}_lane"), Signal(max(1, e_log2), name=f"{port}_sel")
            registered_read(addr_out, en, el >> e_log2, request, also=[(at_addr, low(el, e_log2))])
            with m.If(en):
                m.d.sync += at_data.eq(at_addr)
            if p.lanes > WIDE_LANES:     # the word registered as it leaves the memory, then its lane selected
                word = Signal.like(rd_data, name=f"{port}_word", reset_less=True)
                at_word = Signal.like(at_data, name=f"{port}_at")
                if port == "h_rd":       # in every cycle: the delta encoder's scans read the same register
                    m.d.sync += [word.eq(rd_data), at_word.eq(at_data)]
                    m.d.comb += self.h_rd_word.eq(word)
                else:
                    with m.If(run):
                        m.d.sync += [word.eq(rd_data), at_word.eq(at_data)]
                rd_data, at_data = word, at_word
            req[port]["word"] = rd_data
            req[port]["sel"] = rd_data[at_data] if e_log2 else rd_data[0]
        for port in ("h_wr", "c_wr"):
            m.d.comb += [getattr(self, f"{port}_addr").eq((self.state_base + req[port]["k"]) >> e_log2),
                         getattr(self, f"{port}_en").eq(req[port]["en"]),
                         getattr(self, f"{port}_data").as_value().eq(Cat(*req[port]["data"]))]
        return req

    def _units(self, m, schedules: dict, run, cell_running, collision) -> dict:
        """The shared units, as many copies as the most demanding program needs, each in ``E`` lanes
        (``units[unit][copy][lane]``; the output programs use lane 0).

        ``rq``: the requantizer (stage 0: addresses, 1: the read, 2: the
        lane's accumulator (or the reference) and its multiplier registered, 3: product,
        4: shifted by ``shift - 1``, 5: rounded and saturated; above
        :data:`WIDE_LANES` lanes the memories' outputs are registered as they
        are before stage 2, and the product takes two stages (the products of two
        multiplier blocks, then their sum): two stages more); lane ``e`` takes accumulator lane
        ``lane + e``; ``mul``: fixed-point
        multipliers (product, then round and saturate); ``sig``, ``tanh``:
        activation tables (address, then value; above :data:`WIDE_LANES` lanes the input registered
        first and the value as it leaves the table).
        """
        p = self.p
        width, e_log2 = self.width, p.engine_bits

        def copies(unit):
            return max((s.units.get(unit, 0) for s in schedules.values()), default=0)

        units = {}
        wide = p.lanes > WIDE_LANES
        # Above WIDE_LANES lanes the memories' outputs are registered as they are, and the lane
        # selected a cycle later: no logic follows the block RAM's slow output. A narrow core
        # selects its lane at once (a LUT level): the stage would cost logic cells for nothing.
        # (The accumulator word and the reference in every cycle: the MxV's and the encoder's registers
        # of the same words, merged into the block RAMs' output registers with them; an output program
        # stalls, and reads neither memory again until the item advances; a cached cell program's reads
        # fill the instructions' registers a fixed number of cycles after their requests, stall or not.)
        word, refd = self.acc_data, self.ref_data
        if wide:
            word = Signal.like(self.acc_data, name="rq_word", reset_less=True)
            refd = Signal.like(self.ref_data, name="rq_refd", reset_less=True)
            m.d.sync += [word.eq(self.acc_data), refd.eq(self.ref_data)]
        units["rq_word"] = word
        units["rq_caches"] = [Signal(CACHE_ITEMS * width * p.acc_bits, name=f"rq_cache{i}", reset_less=True)
                              for i in range(len(self.caches))]
        cell = schedules[Program.CELL]
        units["rq"] = [self._requantizer(m, u, word, refd, run, cell_running,
                                         [self.caches[i] for i, sl in enumerate(cell.slots) if i in self.caches
                                          and sl.unit == u], units["rq_caches"])
                       for u in range(copies("rq"))]
        units["mul"] = []
        for u in range(copies("mul")):
            lanes = []
            for e in range(width):
                a, b = Signal(signed(C.FX_BITS), name=f"mul{u}_{e}_a"), Signal(signed(C.FX_BITS), name=f"mul{u}_{e}_b")
                # (the product and operand registers without a reset: the multiplier block's own, deltarnn.fpga.outreg)
                prod = Signal(signed(2 * C.FX_BITS), name=f"mul{u}_{e}_prod", reset_less=True)
                with m.If(run):
                    if p.lanes > WIDE_LANES:      # the operands registered first: the multiplier block's own
                        a_reg = Signal.like(a, name=f"mul{u}_{e}_a_reg", reset_less=True)
                        b_reg = Signal.like(b, name=f"mul{u}_{e}_b_reg", reset_less=True)
                        m.d.sync += [a_reg.eq(a), b_reg.eq(b), prod.eq(a_reg * b_reg)]
                    else:
                        m.d.sync += prod.eq(a * b)
                result = Signal(signed(C.FX_BITS), name=f"mul{u}_{e}_result")
                m.d.comb += result.eq(_sat16((prod + (1 << (C.FX_FRAC - 1))) >> C.FX_FRAC))
                lanes.append(dict(a=a, b=b, result=result))
            units["mul"].append(lanes)
        for unit, kind in (("sig", "sigmoid"), ("tanh", "tanh")):
            units[unit] = []
            for u in range(copies(unit)):
                lanes = []
                for e in range(0, width, 2):     # two lanes to a table: a block RAM's two read ports
                    act = m.submodules[f"{kind}{u}_{e}"] = Activation(kind, registered=p.lanes > WIDE_LANES,
                                                                      ports=min(2, width - e))
                    if self.caches:       # (only a cached cell program stalls while the tables work)
                        m.d.comb += act.en.eq(~collision)
                    lanes += [dict(x=act.x[i], result=act.y[i]) for i in range(act.ports)]
                units[unit].append(lanes)
        return units

    def _requantizer(self, m, u: int, word, refd, run, cell_running, own: list, caches: list) -> dict:
        """Requantizer copy ``u`` in ``E`` lanes (:meth:`_units`), its multipliers from multiplier port ``u``.

        Its operand is an accumulator word's lanes: above :data:`WIDE_LANES` lanes, in a cell program
        whose requantizations keep items of their words, those of the item ``idx`` in the register of the
        instruction (``src``, one of ``own``), else those of the read word (``word``, or the reference
        ``refd``) registered."""
        p = self.p
        width, e_log2 = self.width, p.engine_bits
        wide = p.lanes > WIDE_LANES
        name = f"rq{u}" if u else "rq"
        mult_data = self.mult_data if u == 0 else getattr(self, f"mult{u}_data")

        lane = Signal(range(p.lanes), name=f"{name}_lane")          # stage 0 inputs (comb)
        shift = Signal(SHIFT_BITS, name=f"{name}_shift")
        ref = Signal(name=f"{name}_ref")
        src = Signal(range(max(1, len(caches))), name=f"{name}_src")       # the instruction's register
        idx = Signal(range(CACHE_ITEMS), name=f"{name}_idx")              # and the item's place in it
        lane0, shift0, ref0, src0 = Signal.like(lane), Signal.like(shift), Signal(), Signal.like(src)  # the read's cycle
        lane1, shift1, ref1, src1 = Signal.like(lane), Signal.like(shift), Signal(), Signal.like(src)
        idx0, idx1, idx_s, idx_c = (Signal.like(idx) for _ in range(4))
        with m.If(run):
            m.d.sync += [lane0.eq(lane), shift0.eq(shift), ref0.eq(ref), src0.eq(src),
                         lane1.eq(lane0), shift1.eq(shift0), ref1.eq(ref0), src1.eq(src0),
                         idx0.eq(idx), idx1.eq(idx0), idx_s.eq(idx1), idx_c.eq(idx_s)]
        mults = mult_data
        lane_s, shift_s, ref_s = lane1, shift1, ref1
        if wide:
            mults = Signal(mult_data.shape(), name=f"{name}_mults", reset_less=True)
            lane_s, shift_s, ref_s = Signal.like(lane), Signal.like(shift), Signal()
            src_s, src_c, shift_c = Signal.like(src), Signal.like(src), Signal.like(shift)
            with m.If(run):
                m.d.sync += [mults.eq(mult_data), lane_s.eq(lane1), shift_s.eq(shift1), ref_s.eq(ref1), src_s.eq(src1),
                             src_c.eq(src_s), shift_c.eq(shift_s)]
            shift_s = shift_c         # (the operand a stage later: the instruction's register's)
        shift_o = Signal.like(shift)
        less, zero = Signal.like(shift), Signal()             # shift - 1, shift == 0
        shift_p = shift_o
        if wide:                              # (the product a stage longer)
            shift_p = Signal.like(shift, name=f"{name}_shift_p")
            with m.If(run):
                m.d.sync += shift_p.eq(shift_o)
        with m.If(run):
            m.d.sync += [shift_o.eq(shift_s), less.eq(shift_p - 1), zero.eq(shift_p == 0)]
        lanes = []
        for e in range(width):
            # (the multiplier blocks' operand and product registers without a reset: the ECP5 flow moves them
            # into the blocks, deltarnn.fpga.outreg; only the valid items' values are ever used)
            operand = Signal(signed(max(p.acc_bits, p.abits + 1)), name=f"{name}{e}_operand",  # the lane, or the ref
                             reset_less=True)
            mult = Signal(C.MULT_BITS, name=f"{name}{e}_mult", reset_less=True)
            prod = Signal(signed(p.acc_bits + C.MULT_BITS + 1), name=f"{name}{e}_prod", reset_less=True)
            half = Signal(signed(p.acc_bits + C.MULT_BITS + 2), name=f"{name}{e}_half")  # prod / 2**(shift-1), floored
            if e == 0:      # any accumulator lane (an output program's element), or the reference
                acc_e = word.word_select(lane_s, p.acc_bits).as_signed()
                operand_e = Mux(ref_s, refd, acc_e)
                mult_e = Mux(ref_s, self.hw_mult, mults[lane_s[:e_log2]] if e_log2 else mults[0])
            else:           # lane e of the item at lane_s (a multiple of E)
                operand_e = word.word_select(lane_s[e_log2:], width * p.acc_bits) \
                    .word_select(e, p.acc_bits).as_signed()
                mult_e = mults[e]
            if wide:        # a stage more: the lanes of the read word registered, or the instruction's register's
                pre, pre_mult = Signal.like(operand, name=f"{name}{e}_pre"), Signal.like(mult, name=f"{name}{e}_pre_mult")
                with m.If(run):
                    m.d.sync += [pre.eq(operand_e), pre_mult.eq(mult_e)]
                operand_e, mult_e = pre, pre_mult
                if own:
                    kept = caches[own[-1]]
                    for i in reversed(own[:-1]):
                        kept = Mux(src_c == i, caches[i], kept)
                    item = kept.word_select(idx_c, width * p.acc_bits).word_select(e, p.acc_bits).as_signed()
                    # (only the cell program runs on the copies after the first)
                    operand_e = Mux(cell_running, item, pre) if u == 0 else item
            # round half up: floor((v + 2**(s-1)) / 2**s) == (floor(v / 2**(s-1)) + 1) >> 1, and v itself for
            # s = 0 (as (2v + 1) >> 1): no adder or constant as wide as the shift range
            with m.If(run):
                m.d.sync += [operand.eq(operand_e), mult.eq(mult_e), half.eq(Mux(zero, prod << 1, prod >> less))]
                if not wide:
                    m.d.sync += prod.eq(operand * mult)
                elif len(operand) > 18:      # two multiplier blocks' products registered, then their sum
                    low = Signal(unsigned(17 + C.MULT_BITS), name=f"{name}{e}_low", reset_less=True)
                    high = Signal(signed(len(operand) - 17 + C.MULT_BITS + 1), name=f"{name}{e}_high", reset_less=True)
                    m.d.sync += [low.eq(operand[:17] * mult), high.eq(operand[17:].as_signed() * mult),
                                 prod.eq((high << 17) + low)]
                else:                        # the product of one block registered, then again
                    block = Signal.like(prod, name=f"{name}{e}_block", reset_less=True)
                    m.d.sync += [block.eq(operand * mult), prod.eq(block)]
            up = Const(1)
            if self.broken_lane is not None:  # test-only fault: floor instead of round half up in one lane
                floor = ~ref1 & (lane1 + e == self.broken_lane)
                for i in range(3 + 3 * wide):     # from the cycle after the read to the half's register
                    delayed = Signal(name=f"{name}{e}_floor{i}")
                    with m.If(run):
                        m.d.sync += delayed.eq(floor)
                    floor = delayed
                up = ~floor
            result = Signal(signed(C.FX_BITS), name=f"{name}{e}_result")
            m.d.comb += result.eq(_sat16((half + up) >> 1))
            lanes.append(dict(result=result))
        return dict(lane=lane, shift=shift, ref=ref, src=src, idx=idx, lanes=lanes)

    def _collisions(self, m, sch: Schedule, ports: dict, phase, issued, live, n, cache_rows) -> None:
        """``collision_next``: in the pipeline's next cycle (this one advancing) two requantizations of the cached
        schedule ``sch``, in one phase on two copies, both read the accumulator memory (:func:`cache_reads`):
        the engine then stalls a cycle, the lower copy reading in it, the other in the next. Computed a cycle
        ahead from registers (the stall holds every register of the engine)."""
        ii = sch.ii
        more = Signal()
        m.d.comb += more.eq(issued + 1 < n)

        def valid_next(sl):
            back = sl.start // ii
            if sl.start % ii:
                return live[back]
            return more if back == 0 else live[back - 1]    # (the next cycle starts the next item)

        pairs = []
        for i in self.caches:
            for j in self.caches:
                a, b = sch.slots[i], sch.slots[j]
                if i < j and a.unit != b.unit and a.start % ii == b.start % ii:
                    pairs.append(phase[(a.start - 1) % ii] & valid_next(a) & valid_next(b) &
                                 cache_rows[i][3] & cache_rows[j][3])
        m.d.comb += ports["collision_next"].eq(~ports["collision"] & Cat(*pairs).any())

    def _pipeline(self, m, sch: Schedule, width: int, units: dict, ports: dict, neuron: dict, pool: list, phase,
                  phase_next, issued, live, n, run, stall, cache_rows, unit_input) -> None:
        """One program's schedule in hardware, in ``width`` lanes (the cell program's ``E``, an output
        program's 1); elaborated inside its case of the running program. ``unit_input(input, phase bit,
        value)``: a shared unit's input takes ``value`` in that phase of this program. ``cache_rows``: per
        requantization of a cached schedule, its row's lane register, first-read flag, items left in its
        register, and whether it reads the accumulator memory."""
        ii = sch.ii
        e_log2 = (width - 1).bit_length()
        if sch.cached:
            self._collisions(m, sch, ports, phase, issued, live, n, cache_rows)
        with m.If(run):
            with m.If(phase[ii - 1]):
                m.d.comb += phase_next.eq(1)
                m.d.sync += [issued.eq(issued + 1), live.eq(Cat(issued + 1 < n, live[:-1]))]
            with m.Else():
                m.d.comb += phase_next.eq(phase << 1)
            # the last item's last cycle: (n - 1) * ii + depth - 1 cycles after the first
            with m.If((issued == n + ((sch.depth - 1) // ii - 1)) & phase[(sch.depth - 1) % ii]):
                m.next = "DONE"

        def operand(sl, j, e):
            src, pos = sl.sources[j]
            return pool[src][pos][e]

        def stage(sl, offset=0):
            return phase[(sl.start + offset) % ii]

        def read(port, e):
            """Lane ``e`` of a read port's data (lane 0: the element the request named)."""
            return ports[port]["sel"] if e == 0 else ports[port]["word"][e]

        for i, sl in enumerate(sch.slots):
            op = sl.ins[0]
            k, valid = neuron[sl.start // ii]
            start = stage(sl)
            issue = start & valid & run          # stage 0 of a real item, advancing
            results = None                        # per lane, what the write stage stores (None: no value)

            def request(port, **fields):
                with m.If(start):
                    m.d.comb += [ports[port]["k"].eq(k << e_log2), ports[port]["en"].eq(issue)]
                    for name, v in fields.items():
                        if isinstance(v, list):
                            m.d.comb += [a.eq(b) for a, b in zip(ports[port][name], v)]
                        else:
                            m.d.comb += ports[port][name].eq(v)

            if op in ("rq", "hw"):
                unit = units["rq"][sl.unit]
                port = f"acc{sl.unit}" if sl.unit else "acc"
                path = "x" if op == "hw" else sl.ins[2]
                request(port, block=3 if op == "hw" else sl.ins[3], h=int(path == "h"))
                with m.If(start):
                    m.d.comb += [unit["lane"].eq(ports[port]["lane"]),
                                 unit["shift"].eq(self.shift_h if path == "h" else self.shift_x)]
                    if op == "hw":
                        with m.If(self.hw_identity):
                            m.d.comb += [unit["ref"].eq(1), unit["shift"].eq(self.hw_shift)]
                    if sch.cached:
                        row, first, left, reads = cache_rows[i]
                        m.d.comb += [ports[port]["live"].eq(valid), ports[port]["miss"].eq(reads),
                                     ports[port]["pos"].eq(row[e_log2:]), ports[port]["cache"].eq(self.caches[i]),
                                     unit["src"].eq(self.caches[i]), unit["idx"].eq(Mux(reads, 0, CACHE_ITEMS - left))]
                        with m.If(issue):     # a read keeps its item and the next of the word, up to CACHE_ITEMS
                            last = self.p.lanes // width - 1
                            kept = Mux(row[e_log2:] + CACHE_ITEMS - 1 > last, last - row[e_log2:], CACHE_ITEMS - 1)
                            m.d.sync += [row.eq(row + width), first.eq(0), left.eq(Mux(reads, kept, left - 1))]
                if op == "hw":
                    request("ref")
                results = [unit["lanes"][e]["result"] for e in range(width)]
            elif op == "vec":
                request("vec", block=sl.ins[2])
                results = [read("vec", e) for e in range(width)]
            elif op == "ld":
                port = "h_rd" if sl.ins[2] == "h" else "c_rd"
                request(port)
                results = [read(port, e) for e in range(width)]
            elif op == "mul":
                lanes = units["mul"][sl.unit]
                for e in range(width):
                    unit_input(lanes[e]["a"], sl.start % ii, operand(sl, 0, e))
                    unit_input(lanes[e]["b"], sl.start % ii, operand(sl, 1, e))
                results = [lanes[e]["result"] for e in range(width)]
            elif op in ("sig", "tanh"):
                lanes = units[op][sl.unit]
                for e in range(width):
                    unit_input(lanes[e]["x"], sl.start % ii, operand(sl, 0, e))
                results = [lanes[e]["result"] for e in range(width)]
            elif op == "add":
                results = []
                for e in range(width):
                    total = operand(sl, 0, e) + operand(sl, 1, e)
                    if len(sl.ins) == 5:
                        total = total + operand(sl, 2, e)
                    results.append(Mux(total > C.FX_MAX, C.FX_MAX, Mux(total < C.FX_MIN, C.FX_MIN, total)))
            elif op == "omin":
                results = [C.FX_ONE - operand(sl, 0, e) for e in range(width)]
            elif op == "relu":
                results = [Mux(operand(sl, 0, e) < 0, 0, operand(sl, 0, e)) for e in range(width)]
            elif op == "st":
                request("h_wr" if sl.ins[1] == "h" else "c_wr", data=[operand(sl, 0, e) for e in range(width)])
            elif op == "out":
                with m.If(start & valid):
                    m.d.comb += [self.out.valid.eq(1), self.out.payload.eq(operand(sl, 0, 0))]
                    if self.p.lanes <= WIDE_LANES:      # (above, the core's FIFO has room: out_ii)
                        m.d.comb += stall.eq(~self.out.ready)

            if results is not None:
                with m.If(run & stage(sl, sl.latency - 1)):
                    for e, result in enumerate(results):
                        chain = [pool[i][j][e] for j in range(sch.chain[i])]
                        m.d.sync += chain[0].eq(result)
                        m.d.sync += [chain[j].eq(chain[j - 1]) for j in range(1, len(chain))]
