"""The simulated board: the whole board top, UART included, in Verilator, behind the host driver's Link.

:func:`build_board` exports :class:`deltarnn.hw.top.BoardTop` to Verilog and
compiles it with ``board_harness.cpp`` (a clock, a UART on the other end of
the serial lines, and a request loop on stdin / stdout) into one executable,
cached like the co-simulation builds (``deltarnn.sim.build_cache``: rebuilt
only when the gateware, the parameters, the harness or the tools change).
:class:`SimLink` runs it as a child process: the driver writes request bytes,
which the harness sends bit by bit on the board's ``rx`` line, and reads the
bytes the board sends on ``tx``. Time is the board's: a read's timeout is
simulated seconds (cycles at the board's clock), so every timeout of the
driver behaves as on a real board, only deterministic.

Typical use::

    from deltarnn.device.driver import Device
    from deltarnn.sim.board import SimLink

    with Device(SimLink.for_params(params)) as dev:
        dev.load(qm)
        outputs = dev.run(x).outputs
"""

from __future__ import annotations

import logging
import math
import os
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from deltarnn.device.link import Link, LinkError
from deltarnn.sim import build_cache, runner
from deltarnn.sim.cosim import gateware_digest
from deltarnn.spec import protocol as P
from deltarnn.spec.memory_map import DeviceParams

__all__ = ["SIM_BAUD", "SIM_CLOCK_HZ", "BoardBuild", "SimLink", "build_board"]

log = logging.getLogger(__name__)

TOPLEVEL = "board"
HARNESS = Path(__file__).resolve().with_name("board_harness.cpp")
#: The simulated board's clock and baud rate: 4 cycles per bit, the fastest the UART runs, so loading a
#: model costs the fewest simulated cycles. Any board's clock and rate can be simulated instead.
SIM_CLOCK_HZ, SIM_BAUD = 12_000_000, 3_000_000
#: Verilator's arguments: optimised C++, the board's four ports are all the harness touches.
_ARGS = ("-Wno-fatal", "--x-assign", "fast", "--x-initial", "fast", "-CFLAGS", "-O2")


@dataclass(frozen=True)
class BoardBuild:
    """A compiled simulated board."""

    executable: Path
    params: DeviceParams
    clock_hz: int
    baud: int
    max_payload: int
    divisor: int
    built: bool        #: compiled by this call (False: reused from the cache)
    seconds: float


def build_board(params: DeviceParams, clock_hz: int = SIM_CLOCK_HZ, baud: int = SIM_BAUD,
                max_payload: int = P.MAX_PAYLOAD, *, cache_root=None) -> BoardBuild:
    """Compile (or reuse) the simulated board of a core with ``params``.

    Raises
    ------
    deltarnn.sim.runner.SimulatorNotFound
        Verilator or a C++ compiler is missing.
    deltarnn.sim.runner.SimulationError
        The build failed (the message quotes the end of its log).
    """
    from deltarnn.hw.top import BoardTop
    from deltarnn.hw.uart import divisor_for

    t0 = time.perf_counter()
    runner.check_simulator("verilator")
    divisor = divisor_for(clock_hz, baud)
    key = {"params": params.as_dict(), "clock_hz": int(clock_hz), "baud": int(baud), "max_payload": max_payload}
    bdir = build_cache.build_dir_for(TOPLEVEL, key, cache_root=cache_root)
    exe = bdir / "obj" / "sim_board"
    manifest = {"gateware": gateware_digest(), "key": key, "harness": build_cache.file_digest(HARNESS),
                "verilator": metadata.version("verilator"), "args": list(_ARGS)}
    digest = build_cache.manifest_digest(manifest)
    with build_cache.locked(bdir):
        if exe.is_file() and build_cache.stamp_digest(bdir) == digest:
            return BoardBuild(exe, params, int(clock_hz), int(baud), max_payload, divisor, False,
                              time.perf_counter() - t0)
        build_cache.clear_stamp(bdir)
        from deltarnn.sim.verilog import write_verilog

        log.info("building the simulated board in %s", bdir)
        verilog = write_verilog(BoardTop(params, clock_hz, baud, max_payload), bdir / f"{TOPLEVEL}.v", name=TOPLEVEL)
        obj = bdir / "obj"
        cmd = [str(runner.verilator_bin_dir() / "verilator"), "--cc", "--exe", "--build",
               "-j", str(max(1, len(os.sched_getaffinity(0)))), *_ARGS, "--top-module", TOPLEVEL,
               "--prefix", "Vtop", "--Mdir", str(obj), "-o", exe.name, str(verilog.path), str(HARNESS)]
        build_log = bdir / "build.log"
        # Verilator's run-time objects, compiled once and linked by every later board build
        shared = build_cache.SharedRuntime.for_build(["board", manifest["verilator"], list(_ARGS)],
                                                     runner.verilator_bin_dir().parent / "include")
        linked = shared.make_variables()

        def make(variables):
            with open(build_log, "w") as out:
                return subprocess.run(cmd, cwd=bdir, env=runner.verilator_environment(variables), stdout=out,
                                      stderr=subprocess.STDOUT).returncode

        failed = make(linked)
        if not failed and linked and not shared.matches(obj, TOPLEVEL):
            log.warning("the shared Verilator run-time objects do not fit this build: compiling its own")
            failed = make({})
        elif not failed and not linked:
            shared.save(obj, TOPLEVEL)
        if failed or not exe.is_file():
            raise runner.SimulationError(f"the simulated board did not build:\n{runner.log_tail(build_log)}\n"
                                         f"see {build_log}", log=build_log)
        build_cache.write_stamp(bdir, digest, manifest)
    return BoardBuild(exe, params, int(clock_hz), int(baud), max_payload, divisor, True, time.perf_counter() - t0)


class SimLink(Link):
    """A :class:`~deltarnn.device.link.Link` into the simulated board.

    Parameters
    ----------
    build : BoardBuild
        From :func:`build_board`; :meth:`for_params` builds and opens in one call.

    Attributes
    ----------
    cycles : int
        Clock cycles the board has run.
    """

    def __init__(self, build: BoardBuild):
        self.build = build
        self.baud, self.clock_hz = build.baud, build.clock_hz
        self._cycles = 0
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen([str(build.executable), str(build.divisor)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr)
        except OSError as e:
            raise LinkError(f"cannot start the simulated board {build.executable}: {e}") from None

    @classmethod
    def for_params(cls, params: DeviceParams, clock_hz: int = SIM_CLOCK_HZ, baud: int = SIM_BAUD,
                   max_payload: int = P.MAX_PAYLOAD, *, cache_root=None) -> SimLink:
        return cls(build_board(params, clock_hz, baud, max_payload, cache_root=cache_root))

    def _send(self, data: bytes) -> None:
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise LinkError(self._died()) from None

    def _recv(self, n: int) -> bytes:
        data = self._proc.stdout.read(n) if n else b""
        if len(data) != n:
            raise LinkError(self._died())
        return data

    def _died(self) -> str:
        self._proc.poll()
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace").strip().splitlines()
        return (f"the simulated board stopped (exit status {self._proc.returncode})"
                + (f": {err[-1]}" if err else ""))

    def write(self, data: bytes) -> None:
        self._send(b"W" + struct.pack("<I", len(data)) + bytes(data))

    def read(self, size: int, timeout: float) -> bytes:
        self._send(b"R" + struct.pack("<IQ", size, max(0, math.ceil(timeout * self.clock_hz))))
        ran, n = struct.unpack("<QI", self._recv(12))
        self._cycles += ran
        return self._recv(n)

    def now(self) -> float:
        return self._cycles / self.clock_hz

    def reset(self, cycles: int = 16) -> None:
        """Pulse the board's reset input (as its reset button would): registers restart, memories keep."""
        self._send(b"X" + struct.pack("<I", cycles))
        self._recv(8)
        self._cycles += cycles

    @property
    def cycles(self) -> int:
        self._send(b"C")
        return struct.unpack("<Q", self._recv(8))[0]

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(b"Q")
                self._proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()


def params_for(qm, lanes: int = 4) -> DeviceParams:
    """A core for the simulated board that runs ``qm``: sized to it, or for a bidirectional model to the largest
    of its host passes (one direction of one layer each, :mod:`deltarnn.device.passes`).

    Raises
    ------
    deltarnn.device.image.DeviceFitError
        If ``lanes`` is not a power of two.
    """
    from dataclasses import fields, replace

    from deltarnn.device.passes import part
    from deltarnn.sim.cosim import device_params_for

    if not qm.bidirectional:
        return device_params_for(qm, lanes=lanes)
    parts = [device_params_for(part(qm, i, 1, d, False), lanes=lanes)
             for i in range(qm.num_layers) for d in range(qm.directions)]
    widest = {f.name: max(getattr(p, f.name) for p in parts) for f in fields(DeviceParams)
              if f.name not in ("cell", "lanes", "weight_words")}
    params = replace(parts[0], **widest, weight_words=0)
    return replace(params, max_wbits=params.max_wbits if params.max_wbits > params.wmem_bits else 0,
                   weight_words=max(params.weight_depth, *(p.weight_depth for p in parts)))
