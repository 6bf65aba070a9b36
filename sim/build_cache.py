"""The simulator build cache: build directories, stamps, locks, shared Verilator objects.

- :func:`build_dir_for`: one build directory per (simulator, toplevel, build
  key, parameters, wave format) under a cache root (``<repo>/build/sim/``, or
  ``$DELTARNN_SIM_CACHE``);
- :func:`manifest_digest`, :func:`stamp_digest`, :func:`write_stamp`,
  :func:`clear_stamp`: the stamp file that records the hash of everything a
  build depended on, so that an unchanged build is skipped;
- :func:`locked`: an exclusive file lock on a build directory, so that
  parallel processes (pytest-xdist workers) do not build into it at once;
- :func:`write_if_changed`: writes a file only when its text changes (so its
  modification time, and what is keyed on it, stays put);
- :class:`SharedRuntime`: Verilator's run-time library objects
  (``verilated*.o``, about 20 CPU-seconds of C++ for every model), compiled
  once per compiler and flag set and linked into every later model.

Nothing here runs a simulator: :mod:`deltarnn.sim.runner` uses these pieces
around cocotb's runner.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltarnn.quant.qmodel import write_atomically

__all__ = [
    "DEFAULT_CACHE_ROOT",
    "resolve_cache_root",
    "build_dir_for",
    "canonical",
    "safe_name",
    "file_digest",
    "include_files",
    "manifest_digest",
    "stamp_digest",
    "write_stamp",
    "clear_stamp",
    "locked",
    "write_if_changed",
    "SharedRuntime",
]

log = logging.getLogger(__name__)

#: Where build directories go unless a call names another root or the
#: ``DELTARNN_SIM_CACHE`` environment variable names one.
DEFAULT_CACHE_ROOT: Path = Path(__file__).resolve().parent.parent / "build" / "sim"

_STAMP = ".deltarnn-build.json"
_LOCK = ".deltarnn-build.lock"
_RUNTIME_DIR = "_runtime"
_RUNTIME_INDEX = "runtime.json"
#: Environment variables that reach the C++ compile of Verilator's run-time objects.
_FLAG_VARS = ("CXX", "CXXFLAGS", "CPPFLAGS", "OPT", "OPT_FAST", "OPT_SLOW", "OPT_GLOBAL",
              "OBJCACHE", "USER_CPPFLAGS", "MAKEFLAGS")


def resolve_cache_root(root: str | os.PathLike | None = None) -> Path:
    """Return the root of the build directories.

    Parameters
    ----------
    root : path-like, optional
        An explicit root; by default ``$DELTARNN_SIM_CACHE`` if set, else
        :data:`DEFAULT_CACHE_ROOT` (``<repo>/build/sim``).

    Returns
    -------
    pathlib.Path
        An absolute path.
    """
    if root is None:
        root = os.environ.get("DELTARNN_SIM_CACHE") or DEFAULT_CACHE_ROOT
    return Path(root).absolute()


def canonical(value: Any) -> str:
    """Return a canonical JSON text of ``value`` (sorted keys, ``repr`` of unknown objects)."""
    return json.dumps(value, sort_keys=True, default=repr, separators=(",", ":"))


def safe_name(text: str) -> str:
    """Return ``text`` with every run of characters other than ``A-Za-z0-9_.-`` replaced by ``_``."""
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
        Root of all build directories; see :func:`resolve_cache_root`.

    Returns
    -------
    pathlib.Path
        ``<cache_root>/<simulator>/<toplevel>[-<hash>][-<waves>]``.
    """
    name = safe_name(toplevel)
    if build_key is not None or parameters:
        digest = hashlib.sha256(canonical([build_key, dict(parameters or {})]).encode()).hexdigest()
        name = f"{name}-{digest[:12]}"
    if waves:
        name = f"{name}-{waves}"
    return resolve_cache_root(cache_root) / simulator / name


def file_digest(path: Path) -> str:
    """Return the SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def include_files(includes: Iterable[Path]) -> list[Path]:
    """Return the Verilog files (``.v``, ``.vh``, ``.sv``, ``.svh``) under include directories, sorted."""
    files = []
    for inc in includes:
        if inc.is_dir():
            files += sorted(p for p in inc.rglob("*")
                            if p.is_file() and p.suffix in (".v", ".vh", ".sv", ".svh"))
    return files


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """Return the SHA-256 of a build manifest's :func:`canonical` text."""
    return hashlib.sha256(canonical(manifest).encode()).hexdigest()


def stamp_digest(build_dir: Path) -> str | None:
    """Return the digest recorded in a build directory's stamp, or ``None`` if there is none."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return json.loads((build_dir / _STAMP).read_text()).get("digest")
    return None


def write_stamp(build_dir: Path, digest: str, manifest: Mapping[str, Any]) -> None:
    """Record a finished build: its digest and the manifest it was computed from."""
    write_if_changed(build_dir / _STAMP,
                     json.dumps({"digest": digest, "manifest": manifest}, indent=1) + "\n")


def clear_stamp(build_dir: Path) -> None:
    """Remove a build directory's stamp (before a build, so a failed one is never reused)."""
    (build_dir / _STAMP).unlink(missing_ok=True)


@contextlib.contextmanager
def locked(build_dir: Path):
    """Hold an exclusive lock on a build directory (created if missing) for the ``with`` block."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / _LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` to ``path`` unless the file already holds exactly this text.

    The text goes to a temporary file beside the target, which is then renamed
    over it, so a reader never sees half a file.  Parent directories are
    created.

    Parameters
    ----------
    path : path-like
    text : str

    Returns
    -------
    bool
        ``True`` if the file was (re)written.
    """
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text.encode())
    return True


# --- Verilator's run-time library objects -------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _compiler_identity() -> str:
    cxx = os.environ.get("CXX") or "c++"
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return f"{cxx} {out.splitlines()[0] if out else '?'}"


def _fingerprint(build_dir: Path, toplevel: str) -> dict | None:
    """What the generated makefiles say about the run-time objects of a build.

    The names of the objects (``VM_GLOBAL_FAST``/``VM_GLOBAL_SLOW`` of
    ``Vtop_classes.mk``), its ``VM_*`` switches but ``VM_PARALLEL_BUILDS``
    (which does not reach these objects) and ``Vtop.mk`` with the design's
    name and source directories taken out: together with
    ``verilated.mk``, which the Verilator version fixes, and the environment,
    this is everything ``make`` compiles the objects with.
    """
    try:
        classes = (build_dir / "Vtop_classes.mk").read_text()
        makefile = (build_dir / "Vtop.mk").read_text()
    except OSError:
        return None
    switches, names, in_globals = [], [], False
    for line in classes.splitlines():
        stripped = line.strip()
        if re.match(r"^VM_[A-Z0-9_]+ = ", stripped) and not stripped.startswith("VM_PARALLEL_BUILDS"):
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
    if not names:
        return None
    out, skipping = [], False
    for line in makefile.splitlines():
        if line.startswith("VM_USER_DIR"):
            skipping = True
        if skipping:
            if not line.strip():
                skipping = False
            continue
        out.append(re.sub(rf"(?<![\w.$/-]){re.escape(toplevel)}(?![\w.-])", "@TOP@", line))
    return {"objects": names, "switches": switches, "makefile": "\n".join(out)}


@dataclass(frozen=True)
class SharedRuntime:
    """Verilator's run-time library objects of one flag set, shared by every model built with it.

    Verilator compiles ``verilated.cpp``, ``verilated_vpi.cpp`` and the other
    run-time sources into every model's build directory, and recompiles them
    whenever it regenerates the model's makefile, that is on every build.
    Instead, the first build of a flag set keeps its objects in
    :attr:`directory`, and later builds link them through make variables on
    the command line (:meth:`make_variables`), which cocotb's runner passes on
    through the inherited ``MAKEFLAGS``.

    The key of :attr:`directory` is known before the build: a hash of the
    caller's material (the Verilator and cocotb versions, the build arguments,
    the wave option), the C++ compiler and the flag variables of the
    environment.  What the generated makefiles then say (:func:`_fingerprint`)
    is recorded when the objects are saved, and :meth:`matches` compares a
    build that linked them with it, so a key that missed something costs a
    rebuild, never a model linked with foreign objects.

    Attributes
    ----------
    directory : pathlib.Path
        ``<root>/verilator/_runtime/<key>``.
    include_dir : pathlib.Path
        Verilator's ``include`` directory: objects are saved only if their
        dependencies all lie in it.
    """

    directory: Path
    include_dir: Path

    @classmethod
    def for_build(cls, material: Any, include_dir: Path,
                  root: str | os.PathLike | None = None) -> SharedRuntime:
        """The shared objects of a build.

        Parameters
        ----------
        material : JSON-serialisable
            Everything of the build that may reach the objects' compile (tool
            versions, build arguments, wave option).
        include_dir : pathlib.Path
            Verilator's ``include`` directory.
        root : path-like, optional
            Cache root; by default ``$DELTARNN_SIM_CACHE`` or
            :data:`DEFAULT_CACHE_ROOT`, whatever root the build directory is
            under, so that builds in temporary roots (tests) share them too.

        Returns
        -------
        SharedRuntime
        """
        key = hashlib.sha256(canonical(
            [material, _compiler_identity(), {v: os.environ.get(v, "") for v in _FLAG_VARS}]
        ).encode()).hexdigest()[:16]
        return cls(resolve_cache_root(root) / "verilator" / _RUNTIME_DIR / key, Path(include_dir))

    def _index(self) -> dict | None:
        with contextlib.suppress(OSError, ValueError):
            index = json.loads((self.directory / _RUNTIME_INDEX).read_text())
            if all((self.directory / f"{n}.o").is_file() for n in index["objects"]):
                return index
        return None

    def make_variables(self) -> dict[str, str]:
        """Make variables that link the saved objects instead of compiling them.

        Returns
        -------
        dict of str to str
            Empty when nothing is saved yet.  Otherwise ``VM_GLOBAL_FAST`` and
            ``VM_GLOBAL_SLOW`` (the objects ``Vtop.mk`` would compile) empty,
            and the saved objects, followed by the environment's value, in
            ``USER_LDLIBS`` (which Verilator leaves to the user).
        """
        index = self._index()
        if index is None:
            return {}
        objects = [str(self.directory / f"{n}.o") for n in index["objects"]]
        user = os.environ.get("USER_LDLIBS", "").strip()
        log.info("linking Verilator run-time objects from %s", self.directory)
        return {"VM_GLOBAL_FAST": "", "VM_GLOBAL_SLOW": "",
                "USER_LDLIBS": " ".join(objects + ([user] if user else []))}

    def matches(self, build_dir: Path, toplevel: str) -> bool:
        """Tell whether a build's makefiles ask for the saved objects, compiled as they were."""
        index = self._index()
        return index is not None and index.get("fingerprint") == _fingerprint(build_dir, toplevel)

    def save(self, build_dir: Path, toplevel: str) -> bool:
        """Keep a finished build's run-time objects, unless some are saved already.

        Objects whose dependency files (``.d``) name anything outside
        :attr:`include_dir` (a header of the user's, through ``-CFLAGS -I``)
        are not saved.

        Returns
        -------
        bool
            ``True`` if this call saved them.
        """
        if self.directory.is_dir():
            return False
        fingerprint = _fingerprint(build_dir, toplevel)
        if fingerprint is None:
            return False
        names = fingerprint["objects"]
        include = str(self.include_dir)
        for n in names:
            obj, dep = build_dir / f"{n}.o", build_dir / f"{n}.d"
            if not (obj.is_file() and dep.is_file()):
                return False
            deps = dep.read_text().replace("\\\n", " ").split(":", 1)[-1].split()
            if any(not os.path.abspath(d).startswith(include) for d in deps):
                return False
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.directory.parent))
        try:
            for n in names:
                shutil.copyfile(build_dir / f"{n}.o", tmp / f"{n}.o")
            (tmp / _RUNTIME_INDEX).write_text(
                json.dumps({"objects": names, "fingerprint": fingerprint}, indent=1) + "\n")
            os.rename(tmp, self.directory)
        except OSError:
            return False        # another process saved them first, or the disk is full: no harm
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("saved Verilator run-time objects in %s", self.directory)
        return True
