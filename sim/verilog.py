"""Verilog export of Amaranth designs for co-simulation.

:func:`to_verilog` converts a :class:`amaranth.lib.wiring.Component` (or any
elaboratable with explicit ports) with :func:`amaranth.back.verilog.convert`,
after :func:`deltarnn.fpga.toolchain.setup_environment` has pointed Amaranth at the
pip-installed Yosys.  :func:`write_verilog` writes the text to a file only when
it differs from the file's current contents
(:func:`deltarnn.sim.build_cache.write_if_changed`), so a file's modification
time (and the content hash that :func:`deltarnn.sim.runner.build` keys its
builds on) changes only when the design does.

Port naming: a component's signature members become ports named by their path
joined with ``__`` (``i_stream__payload``); a ``sync`` domain adds ``clk`` and
``rst``.  Verilog ports carry no signedness, so a testbench reading a signed
port must sign-extend it itself (``dut.out.value.to_signed()``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from deltarnn.fpga.toolchain import require_tools, setup_environment
from deltarnn.sim.build_cache import write_if_changed

__all__ = ["VerilogFile", "to_verilog", "write_verilog"]


class VerilogFile(NamedTuple):
    """Result of :func:`write_verilog`.

    Attributes
    ----------
    path : pathlib.Path
        Absolute path of the Verilog file.
    name : str
        Name of the top module.
    changed : bool
        ``True`` if the file was (re)written, ``False`` if it already held
        exactly this text.
    """

    path: Path
    name: str
    changed: bool


def to_verilog(elaboratable, *, name: str = "top", ports=None, emit_src: bool = False,
               **kwargs) -> str:
    """Convert an Amaranth design to Verilog text.

    Parameters
    ----------
    elaboratable : amaranth.hdl.Elaboratable
        A :class:`~amaranth.lib.wiring.Component`, whose signature gives the
        ports, or any elaboratable together with ``ports``.
    name : str
        Name of the top module (the cocotb ``toplevel``).
    ports : optional
        Ports for a plain elaboratable (a list of signals, or a dict of name to
        ``(value, direction)``), as :func:`amaranth.back.verilog.convert` takes.
    emit_src : bool
        Keep ``(* src = "file.py:line" *)`` attributes.  Off by default, so
        that editing comments or moving code in the Python sources does not
        change the Verilog text and force a simulator rebuild; turn it on to
        trace a Verilator warning back to its Python line.
    **kwargs
        Passed to :func:`amaranth.back.verilog.convert`.

    Returns
    -------
    str

    Raises
    ------
    deltarnn.fpga.toolchain.ToolchainError
        If Yosys cannot be found.
    """
    from amaranth.back import verilog

    setup_environment()
    require_tools("YOSYS")
    return verilog.convert(elaboratable, name=name, ports=ports, emit_src=emit_src, **kwargs)


def write_verilog(elaboratable, path: str | os.PathLike, *, name: str = "top", ports=None,
                  emit_src: bool = False, **kwargs) -> VerilogFile:
    """Export an Amaranth design to a Verilog file, touching it only on change.

    Parameters
    ----------
    elaboratable : amaranth.hdl.Elaboratable
        See :func:`to_verilog`.
    path : str or os.PathLike
        The file to write; its parent directories are created.
    name, ports, emit_src, **kwargs
        See :func:`to_verilog`.

    Returns
    -------
    VerilogFile
        The absolute path, the module name and whether the file changed.
    """
    text = to_verilog(elaboratable, name=name, ports=ports, emit_src=emit_src, **kwargs)
    path = Path(path).absolute()
    return VerilogFile(path, name, write_if_changed(path, text))
