"""The host driver: a QModel loaded onto a board and run over its serial protocol.

:class:`Device` speaks ``docs/protocol.md`` over any
:class:`~deltarnn.device.link.Link` (a board's serial port, or the simulated
board of :mod:`deltarnn.sim.board`): the same framing, CRCs, retries and
timeouts over both. One API::

    with Device(link) as dev:
        ident = dev.identify()        # what the bitstream holds; a model is refused before it is sent
        dev.load(qm)                  # CLEAR, the registers, bursts of words with their CRC read back
        result = dev.run(x)           # x: (batch, time, features) floats -> result.outputs, .step_cycles

Faults end in a transparent retry or one :class:`DeviceError` line:

- a reply lost, cut short or corrupted (its CRC): the request is sent again,
  after the board's frame timeout has dropped a partial one; a ``STEP`` is
  never sent twice (that would advance the state twice): the driver reads the
  counters, and reads the outputs again if the step ran;
- ``BAD_CRC`` (the request was corrupted on the way): sent again;
- the board was reset during a run (``NO_MODEL``, or the step counter went
  back): the model is loaded again and the sequence restarts, once;
- a refused value, a model too big, no answer after every retry: an error.

A model bigger than the device (more layers than the build holds, or
bidirectional layers) runs in host passes (:mod:`deltarnn.device.passes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from deltarnn.device.image import DeviceFitError, deltas_of, pack
from deltarnn.device.link import Link
from deltarnn.device import passes as host_passes
from deltarnn.quant.qmodel import QModel
from deltarnn.spec import contract as C
from deltarnn.spec import protocol as P
from deltarnn.spec.memory_map import CELL_CODES, DeviceParams, Region

__all__ = ["Device", "DeviceError", "DeviceResetError", "RunResult", "params_of"]

_CELLS = {code: cell for cell, code in CELL_CODES.items()}

_STATUS_TEXT = {
    P.Status.UNKNOWN_COMMAND: "the device does not know this command (a bitstream of another protocol version?)",
    P.Status.BAD_LENGTH: "the device refused the request's length",
    P.Status.OUT_OF_RANGE: "the device refused a value as out of range",
    P.Status.TOO_BIG: "the model is too big for this device's memories",
    P.Status.NO_MODEL: "no model is loaded on the device",
    P.Status.BUSY: "the device was busy",
}


class DeviceError(RuntimeError):
    """The device refused a command, or does not answer."""


class DeviceResetError(DeviceError):
    """The device lost its model during a run (it was reset)."""


def params_of(ident: P.Identity) -> DeviceParams:
    """The core parameters of a device that answered IDENTIFY with ``ident`` (its memory map)."""
    if ident.cell not in _CELLS:
        raise DeviceError(f"the device reports an unknown cell code {ident.cell}")
    try:
        p = DeviceParams(_CELLS[ident.cell], lanes=ident.lanes, max_input=ident.max_input,
                         max_hidden=ident.max_hidden, max_layers=ident.max_layers, max_classes=ident.max_classes,
                         wmem_bits=ident.wmem_bits, abits=ident.abits, acc_bits=ident.acc_bits,
                         max_wbits=ident.max_wbits if ident.max_wbits > ident.wmem_bits else 0,
                         weight_words=ident.weight_words)
        # engine lanes: the default's (0), unless the build chose others
        return p if p.engine_width == ident.engine_lanes else replace(p, engine_lanes=ident.engine_lanes)
    except ValueError as e:
        raise DeviceError(f"the device reports a core no host can drive: {e}") from None


@dataclass
class RunResult:
    """What :meth:`Device.run` returns."""

    outputs: np.ndarray           #: (batch, time, outputs) fixed-point integers, as the golden model's ``outputs_fx``
    step_cycles: np.ndarray       #: (batch, time) device cycles of every step (summed over host passes)
    passes: int                   #: device passes per sequence (1 when the model fits the device)
    stats: dict = field(default_factory=dict)   #: bytes sent and received, retries, reloads


class Device:
    """A board (or the simulated board) behind a :class:`~deltarnn.device.link.Link`.

    Parameters
    ----------
    link : Link
        Closed with the device.
    timeout : float
        Seconds (of the board's time) to wait for a reply, on top of the
        time its bytes take on the line.
    retries : int
        Times a request is sent again after a lost or corrupted reply.
    """

    def __init__(self, link: Link, timeout: float = 0.5, retries: int = 3):
        self.link = link
        self.timeout, self.retries = float(timeout), int(retries)
        self._seq = 0
        self._parser = P.FrameParser(P.REPLY_SYNC)
        self._identity: P.Identity | None = None
        self._model: QModel | None = None     # loaded (a single pass) or to run in passes
        self._on_device: QModel | None = None  # what the device holds now
        self.stats = {"bytes_sent": 0, "bytes_received": 0, "retries": 0, "reloads": 0}

    def close(self) -> None:
        self.link.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- frames ----------------------------------------------------------------------------

    def _wait(self, nbytes: int) -> float:
        """The reply timeout for ``nbytes`` on the line (both ways)."""
        return self.timeout + 10 * nbytes / self.link.baud

    def _reply(self, seq: int, timeout: float) -> P.Frame | None:
        """The reply to request ``seq``, or None if none comes in ``timeout`` (older replies are dropped)."""
        deadline = self.link.now() + timeout
        parser = self._parser
        while True:
            remaining = deadline - self.link.now()
            buf = parser.buffer
            need = P.HEADER_BYTES + P.TRAILER_BYTES
            if len(buf) >= P.HEADER_BYTES and buf[0] == P.REPLY_SYNC:
                length = int.from_bytes(buf[3:5], "little")
                need = P.HEADER_BYTES + min(length, P.MAX_PAYLOAD) + P.TRAILER_BYTES
            data = self.link.read(max(1, need - len(buf)), remaining) if remaining > 0 else b""
            self.stats["bytes_received"] += len(data)
            if data:
                frames = parser.feed(data)
            elif self.link.now() >= deadline:
                frames = parser.expire()       # a reply cut short: look for frames after its start
                if not frames and not parser.buffer:
                    return None
            else:
                continue
            for frame in frames:
                if frame.seq == seq:
                    return frame

    def _send(self, command: P.Command, payload: bytes = b"") -> int:
        self._seq = (self._seq + 1) & 0xFF
        request = P.request(command, self._seq, payload)
        self.link.write(request)
        self.stats["bytes_sent"] += len(request)
        return self._seq

    def _call(self, command: P.Command, payload: bytes = b"", reply_bytes: int = 64) -> P.Frame:
        """A request the device may run twice; its reply (any status), after retries."""
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                self.link.discard_input()
                self._parser.buffer.clear()
            seq = self._send(command, payload)
            frame = self._reply(seq, self._wait(len(payload) + reply_bytes + 14))
            if frame is not None and frame.code != P.Status.BAD_CRC:
                return frame
        raise DeviceError(f"no reply from the device to {getattr(command, 'name', hex(command))} after {self.retries + 1} tries "
                          f"({self.timeout:g} s each): check the port, the baud rate ({self.link.baud}) and that "
                          f"the board runs a deltarnn bitstream")

    def _ok(self, frame: P.Frame, what: str) -> P.Frame:
        if frame.code != P.Status.OK:
            try:
                text = _STATUS_TEXT.get(P.Status(frame.code), "")
            except ValueError:
                text = f"unknown status {frame.code:#04x}"
            if frame.code == P.Status.NO_MODEL:
                raise DeviceResetError(f"{what}: {text} (was the board reset?)")
            raise DeviceError(f"{what}: {text}")
        return frame

    # --- commands --------------------------------------------------------------------------

    def identify(self) -> P.Identity:
        """The protocol version and the capabilities of the bitstream (cached)."""
        if self._identity is None:
            frame = self._ok(self._call(P.Command.IDENTIFY), "IDENTIFY")
            try:
                ident = P.Identity.unpack(frame.payload)
            except ValueError as e:
                raise DeviceError(f"the device's IDENTIFY reply is not this protocol's: {e}") from None
            if ident.version != P.VERSION:
                raise DeviceError(f"the device speaks protocol version {ident.version}, this host {P.VERSION}: "
                                  f"build the bitstream from this version (deltarnn build)")
            self._identity = ident
        return self._identity

    def command(self, command: int, payload: bytes = b"") -> bytes:
        """Send one request (retried like every other) and return its reply's payload; a status other than
        OK raises :class:`DeviceError`. For requests this class has no method for, and for tests."""
        name = getattr(command, "name", f"command {command:#04x}")
        return self._ok(self._call(command, payload), name).payload

    @property
    def params(self) -> DeviceParams:
        """The device's core parameters (from :meth:`identify`)."""
        return params_of(self.identify())

    def counters(self) -> dict:
        """``cycles``, ``steps`` (since the last reset of a sequence), ``step_cycles`` (the last), ``errors``."""
        return P.unpack_counters(self._ok(self._call(P.Command.READ_COUNTERS), "READ_COUNTERS").payload)

    def load(self, qm: QModel) -> None:
        """Make ``qm`` the model :meth:`run` runs; load it now if it fits in one pass.

        Raises
        ------
        deltarnn.device.image.DeviceFitError
            If the model does not fit the device, even in host passes.
        """
        stages = host_passes.plan(qm, self.params)
        self._model = qm
        if len(stages) == 1 and len(stages[0].passes) == 1:
            self._put(qm)

    def _put(self, qm: QModel) -> None:
        """CLEAR, then ``qm``'s registers and its non-zero words, every burst's CRC checked."""
        p = self.params
        img = pack(qm, p)
        self._on_device = None
        room = self.identify().max_payload
        self._ok(self._call(P.Command.CLEAR), "CLEAR")
        pairs = sorted(img.regs.items())
        per = room // 6
        for i in range(0, len(pairs), per):
            self._ok(self._call(P.Command.WRITE_REGS, P.write_regs_payload(pairs[i:i + per])), "WRITE_REGS")
        per = (room - 5) // 2
        for region, values, bits in ((Region.WEIGHT, img.weights.reshape(-1), p.wmem_bits),
                                     (Region.MULT, img.mult, C.MULT_BITS), (Region.VEC, img.vec, 16)):
            for start in range(0, len(values), per):
                chunk = values[start:start + per]
                if not chunk.any():
                    continue                                  # CLEAR zeroed it
                self._burst(region, start, [int(v) for v in chunk], bits)
        self._on_device = qm

    def _burst(self, region: Region, offset: int, values: list[int], bits: int) -> None:
        payload = P.burst_payload(region, offset, values)
        want = P.crc16(b"".join((v & ((1 << bits) - 1)).to_bytes(2, "little") for v in values))
        for attempt in range(self.retries + 1):
            frame = self._ok(self._call(P.Command.BURST_WRITE, payload), f"BURST_WRITE of {region.name} at {offset}")
            if int.from_bytes(frame.payload, "little") == want:
                return
            self.stats["retries"] += 1
        raise DeviceError(f"the device stored other values than sent in {region.name} at {offset} "
                          f"(the CRC read back differs {self.retries + 1} times): the link corrupts data")

    def _step(self, pairs: list[tuple[int, int]], t: int) -> tuple[list[int], int]:
        """Step ``t`` (0-based, since the sequence's SOFT_RESET) with layer-0 deltas ``pairs``: (outputs, cycles)."""
        payload = P.step_payload(pairs)
        if len(payload) > self.identify().max_payload:
            raise DeviceError(f"a step with {len(pairs)} input deltas does not fit one {self.identify().max_payload}"
                              f"-byte frame (at most {self.identify().max_payload // 4})")
        reply_bytes = 2 * max(self.params.max_classes, self.params.max_hidden) + 4
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            seq = self._send(P.Command.STEP, payload)
            frame = self._reply(seq, self._wait(len(payload) + reply_bytes + 14))
            if frame is None:               # lost: did the step run?
                steps = self.counters()["steps"]
                if steps == t + 1:
                    frame = self._call(P.Command.READ_OUTPUTS, reply_bytes=reply_bytes)
                elif steps != t:
                    raise DeviceResetError(f"the device's step counter is {steps} at step {t} (was it reset?)")
                else:
                    continue
            elif frame.code == P.Status.BAD_CRC:
                continue
            try:
                return P.unpack_step(self._ok(frame, f"STEP {t}").payload)
            except ValueError as e:
                raise DeviceError(f"STEP {t}: {e}") from None
        raise DeviceError(f"STEP {t} found no answer after {self.retries + 1} tries")

    def _sequence(self, steps: list[list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray]:
        self._ok(self._call(P.Command.SOFT_RESET), "SOFT_RESET")
        outs, cycles = [], []
        for t, pairs in enumerate(steps):
            o, c = self._step(pairs, t)
            outs.append(o)
            cycles.append(c)
        return np.array(outs, dtype=np.int64), np.array(cycles, dtype=np.int64)

    def _run_pass(self, qm: QModel, deltas: list, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """Every sequence's deltas through ``qm`` (loaded if the device holds another model)."""
        if self._on_device is not qm:
            self._put(qm)
        outs, cycles = [], []
        for steps in deltas:
            for attempt in (0, 1):
                try:
                    o, c = self._sequence(steps)
                    break
                except DeviceResetError:
                    if attempt:
                        raise
                    self.stats["reloads"] += 1
                    self._put(qm)
            outs.append(o)
            cycles.append(c)
            if progress:
                progress(1)
        return np.stack(outs), np.stack(cycles)

    def run(self, x: np.ndarray, progress=None) -> RunResult:
        """Run the loaded model over float inputs ``x`` ``(batch, time, input_size)``.

        ``progress``, if given, is called with 1 after every sequence of every pass.
        """
        qm = self._model
        if qm is None:
            raise DeviceError("no model loaded: call load(qm) first")
        from deltarnn.quant.golden import check_input

        x = check_input(qm, x)
        stages = host_passes.plan(qm, self.params)
        values = x
        cycles = np.zeros(x.shape[:2], dtype=np.int64)
        for stage in stages:
            q = host_passes.stage_inputs(qm, stage, values)
            theta = qm.layers[stage.first].x_act.theta
            outputs = []
            for p in stage.passes:
                seqs = q[:, ::-1] if p.reverse else q
                out, cyc = self._run_pass(p.model, [deltas_of(s, theta) for s in seqs], progress)
                outputs.append(out)
                cycles += cyc[:, ::-1] if p.reverse else cyc
            values = host_passes.join(stage, outputs)
        if host_passes.needs_host_head(qm):
            values = host_passes.head_on_host(qm, values)
        return RunResult(values, cycles, sum(len(s.passes) for s in stages), dict(self.stats))

    def passes(self, qm: QModel) -> int:
        """Device passes per sequence that ``qm`` needs here."""
        return sum(len(s.passes) for s in host_passes.plan(qm, self.params))


__all__ += ["DeviceFitError"]
