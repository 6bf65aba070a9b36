"""The board's command executor: request frames of :mod:`deltarnn.spec.protocol` run on the core, replies out.

:class:`Link` is what sits between a board's UART and nothing else: bytes
in, bytes out. It holds a :class:`~deltarnn.hw.frame.FrameReceiver`, the
:class:`CommandExecutor` and the :class:`~deltarnn.hw.core.Core`. Every
request gets one reply (``docs/protocol.md``).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from deltarnn.spec import protocol as P
from deltarnn.spec import contract as C
from deltarnn.spec.memory_map import CELL_CODES, REGION_SHIFT, DeviceParams, Op, Reg, Region

from deltarnn.hw.command import command_layout
from deltarnn.hw.core import Core
from deltarnn.hw.frame import FrameReceiver, crc16_byte
from deltarnn.hw.pipe import StreamRegister

__all__ = ["CommandExecutor", "Link", "identity"]

#: Bytes of READ_COUNTERS' reply.
COUNTER_BYTES = 24


def multiple_of_6(value):
    """``value % 6 == 0`` for an unsigned ``value``, without a divider (whose carry chain was the board
    build's critical path): even, and the sum of its even-position bits minus that of its odd-position
    bits a multiple of 3 (as ``2 = -1 mod 3``)."""
    even = [value[i] for i in range(0, len(value), 2)]
    odd = [value[i] for i in range(1, len(value), 2)]
    diff = sum(even) - sum(odd)
    return ~value[0] & Cat(*[diff == k for k in range(-len(odd), len(even) + 1) if k % 3 == 0]).any()


def identity(p: DeviceParams, clock_hz: int, baud: int, max_payload: int = P.MAX_PAYLOAD) -> P.Identity:
    """What a device built with ``p`` answers to IDENTIFY."""
    return P.Identity(P.VERSION, CELL_CODES[p.cell], p.lanes, p.max_input, p.max_hidden, p.max_layers,
                      p.max_classes, p.wmem_bits, p.widest_weight, p.abits, p.acc_bits, p.weight_depth,
                      int(clock_hz), int(baud), int(max_payload), p.engine_width)


class CommandExecutor(wiring.Component):
    """Runs each request frame on the core and sends its reply.

    Parameters
    ----------
    params : DeviceParams
        The core's.
    clock_hz, baud : int
        Reported by IDENTIFY.
    max_payload : int
        The receiver's buffer (request payloads) and the reply buffer.

    Members
    -------
    valid, code, seq, length, crc_ok : In
        The frame receiver's frame (:class:`~deltarnn.hw.frame.FrameReceiver`).
    ack : Out(1)
        The frame is run (its payload no longer needed): the receiver may take the next during the reply.
    buf_addr : Out, buf_data : In(8)
        The receiver's payload buffer.
    cmd : Out(stream.Signature(command_layout())), rsp : In(stream.Signature(32))
        The core's command and response streams.
    tx : Out(stream.Signature(8))
        Reply bytes.

    Latency and throughput: a request's reply begins when the core has run
    it; every payload byte costs two cycles to parse, every reply byte four
    (three to prepare it, one to offer it; or as fast as ``tx`` takes it).
    """

    def __init__(self, params: DeviceParams, clock_hz: int, baud: int, max_payload: int = P.MAX_PAYLOAD):
        self.p = params
        self.max_payload = max_payload
        self.ident = identity(params, clock_hz, baud, max_payload).pack()
        self.max_out = max(params.max_classes, params.max_hidden)
        if 2 * self.max_out + 4 > max_payload:
            raise ValueError(f"a step's reply ({self.max_out} outputs and its cycles) is longer than the "
                             f"{max_payload}-byte payload")
        super().__init__({
            "valid": In(1), "code": In(8), "seq": In(8), "length": In(range(max_payload + 1)), "crc_ok": In(1),
            "ack": Out(1), "buf_addr": Out(range(max_payload)), "buf_data": In(8),
            "cmd": Out(stream.Signature(command_layout())), "rsp": In(stream.Signature(32)),
            "tx": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        reply_depth = max(len(self.ident), COUNTER_BYTES, 2)
        m.submodules.reply = reply_mem = memory.Memory(shape=8, depth=reply_depth, init=[])
        # the outputs, then the step's cycles in two halves
        m.submodules.outputs = out_mem = memory.Memory(shape=16, depth=self.max_out + 2, init=[])
        m.submodules.ident = ident = memory.Memory(shape=8, depth=len(self.ident), init=list(self.ident))
        # synchronous read ports (block RAM, not flip-flops)
        rep_wr, rep_rd = reply_mem.write_port(), reply_mem.read_port()
        out_wr, out_rd = out_mem.write_port(), out_mem.read_port()
        id_rd = ident.read_port(domain="comb")
        # the reply's payload words, addressed by the byte being prepared (SEND_RD) and registered as they leave
        # the memories (SEND_Q)
        rep_q, out_q = Signal(8, reset_less=True), Signal(16, reset_less=True)

        cmd = self.cmd.payload
        status = Signal(8)
        rlen = Signal(range(self.max_payload + 1))     # reply payload bytes
        from_outputs = Signal()                        # the reply's payload is the outputs buffer
        out_len = Signal(range(2 * self.max_out + 5))  # bytes of the last step's reply
        ptr = Signal(range(self.max_payload + 1))      # request payload byte being parsed
        k = Signal(range(9))                           # bytes of the current item / reply word
        word = Signal(48)                              # an item of the payload, bytes shifted in at the top
        got = Signal(32)                               # a register read from the core
        hidden = Signal(16)
        n_out = Signal(range(self.max_out + 1))
        outs = Signal(range(self.max_out + 3))
        region = Signal(8)
        offset = Signal(32)
        crc = Signal(16)
        crc_in = Signal(8)                             # one CRC step, shared by the burst check and the reply
        crc_next = Signal(16)
        m.d.comb += crc_next.eq(crc16_byte(crc, crc_in))
        sent = Signal(range(self.max_payload + P.HEADER_BYTES + P.TRAILER_BYTES + 1))
        m.d.comb += [rep_rd.addr.eq(sent - P.HEADER_BYTES), out_rd.addr.eq((sent - P.HEADER_BYTES) >> 1)]
        m.d.sync += [rep_q.eq(rep_rd.data), out_q.eq(out_rd.data)]
        bad = Signal()                                 # a burst element beyond any region
        m.d.comb += self.buf_addr.eq(ptr)

        def core(name, op, addr, data, then):
            with m.State(name):
                m.d.comb += [self.cmd.valid.eq(1), cmd.op.eq(op), cmd.addr.eq(addr), cmd.data.eq(data)]
                with m.If(self.cmd.ready):
                    m.next = then

        def read(name, reg, then):
            """READ ``reg`` into ``got``."""
            core(name, Op.READ, int(reg), 0, name + "_R")
            with m.State(name + "_R"):
                m.d.comb += self.rsp.ready.eq(1)
                with m.If(self.rsp.valid):
                    m.d.sync += got.eq(self.rsp.payload)
                    m.next = then

        def fetch(name, nbytes, then):
            """Shift the next ``nbytes`` payload bytes into the top of ``word``."""
            with m.State(name):         # the buffer's address is ptr: its data one cycle later
                m.next = name + "_D"
            with m.State(name + "_D"):
                m.d.sync += [word.eq(Cat(word[8:], self.buf_data)), ptr.eq(ptr + 1), k.eq(k + 1)]
                with m.If(k + 1 == nbytes):
                    m.d.sync += k.eq(0)
                    m.next = then
                with m.Else():
                    m.next = name

        def items(name, nbytes, done):
            """The loop over the payload's items of ``nbytes``: each into ``word``, then state ``name + "_DO"``
            (which comes back to ``name``); ``done`` after the last."""
            with m.State(name):
                with m.If(ptr == length):
                    m.next = done
                with m.Else():
                    m.next = name + "_F"
            fetch(name + "_F", nbytes, name + "_DO")

        def put(name, nbytes, then):
            """Write ``got`` into the reply as ``nbytes`` bytes, little-endian (zeros above its 4), from ``rlen`` on."""
            with m.State(name):
                m.d.comb += [rep_wr.addr.eq(rlen), rep_wr.data.eq(Mux(k < 4, got.word_select(k[:2], 8), 0)),
                             rep_wr.en.eq(1)]
                m.d.sync += [rlen.eq(rlen + 1), k.eq(k + 1)]
                with m.If(k + 1 == nbytes):
                    m.d.sync += k.eq(0)
                    m.next = then

        def finish(st):
            """The request is run: release the receiver (the next request may arrive during the reply)."""
            m.d.sync += [status.eq(st), sent.eq(0), crc.eq(0xFFFF)]
            m.d.comb += self.ack.eq(1)
            m.next = "SEND_RD"

        length = self.length
        errors_addr = int(Reg.ERRORS)
        stored = Signal(16)      # a burst element as the region keeps it (the CRC of BURST_WRITE's reply)
        m.d.comb += stored.eq(Mux(region == Region.WEIGHT, word[32:32 + p.wmem_bits],
                                  Mux(region == Region.MULT, word[32:32 + C.MULT_BITS], word[32:48])))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.valid):
                    m.d.sync += [rlen.eq(0), ptr.eq(0), k.eq(0), from_outputs.eq(0)]
                    with m.If(~self.crc_ok):
                        finish(P.Status.BAD_CRC)
                    with m.Else():
                        with m.Switch(self.code):
                            with m.Case(P.Command.IDENTIFY):
                                m.next = "IDENT"
                            with m.Case(P.Command.SOFT_RESET):
                                m.next = "RESET"
                            with m.Case(P.Command.CLEAR):
                                m.next = "CLEAR"
                            with m.Case(P.Command.WRITE_REGS):
                                with m.If(~multiple_of_6(length)):
                                    finish(P.Status.BAD_LENGTH)
                                with m.Else():
                                    m.next = "WR_CLR"
                            with m.Case(P.Command.BURST_WRITE):
                                with m.If((length < 5) | ~length[0]):
                                    finish(P.Status.BAD_LENGTH)
                                with m.Else():
                                    m.d.sync += [crc.eq(0xFFFF), bad.eq(0)]
                                    m.next = "BW_CLR"
                            with m.Case(P.Command.STEP):
                                with m.If(length % 4 != 0):
                                    finish(P.Status.BAD_LENGTH)
                                with m.Else():
                                    m.next = "ST_LAYERS"
                            with m.Case(P.Command.READ_OUTPUTS):
                                m.d.sync += [from_outputs.eq(1), rlen.eq(out_len)]
                                finish(P.Status.OK)
                            with m.Case(P.Command.READ_COUNTERS):
                                m.next = "RC_CYC"
                            with m.Default():
                                finish(P.Status.UNKNOWN_COMMAND)

            # --- IDENTIFY: the identity bytes into the reply
            with m.State("IDENT"):
                m.d.comb += [id_rd.addr.eq(rlen), rep_wr.addr.eq(rlen), rep_wr.data.eq(id_rd.data), rep_wr.en.eq(1)]
                m.d.sync += rlen.eq(rlen + 1)
                with m.If(rlen == len(self.ident) - 1):
                    finish(P.Status.OK)
            core("RESET", Op.RESET, 0, 0, "OK")
            core("CLEAR", Op.CLEAR, 0, 0, "OK")
            with m.State("OK"):
                finish(P.Status.OK)

            # --- WRITE_REGS: (addr u16, value u32) pairs
            core("WR_CLR", Op.WRITE, errors_addr, 0, "WR")
            items("WR", 6, "WR_ERR")
            core("WR_DO", Op.WRITE, word[:16], word[16:48], "WR")
            read("WR_ERR", Reg.ERRORS, "WR_END")
            with m.State("WR_END"):
                finish(Mux(got == 0, P.Status.OK, P.Status.OUT_OF_RANGE))

            # --- BURST_WRITE: region u8, offset u32, values u16
            core("BW_CLR", Op.WRITE, errors_addr, 0, "BW_H")
            fetch("BW_H", 5, "BW_HDR")
            with m.State("BW_HDR"):
                m.d.sync += [region.eq(word[8:16]), offset.eq(word[16:48])]
                m.next = "BW"
            items("BW", 2, "BW_ERR")
            with m.State("BW_DO"):
                with m.If((offset >= 1 << REGION_SHIFT) | (region >= 16)):
                    m.d.sync += bad.eq(1)                   # no address of the core: not written
                    m.next = "BW"
                with m.Else():
                    m.d.comb += [self.cmd.valid.eq(1), cmd.op.eq(Op.WRITE),
                                 cmd.addr.eq(Cat(offset[:REGION_SHIFT], region[:4])), cmd.data.eq(word[32:48])]
                    with m.If(self.cmd.ready):
                        m.d.sync += offset.eq(offset + 1)
                        m.next = "BW_CRC_LO"
            for half, then in ((0, "BW_CRC_HI"), (1, "BW")):     # the stored value into the CRC, a byte a cycle
                with m.State(("BW_CRC_LO", "BW_CRC_HI")[half]):
                    m.d.comb += crc_in.eq(stored.word_select(half, 8))
                    m.d.sync += crc.eq(crc_next)
                    m.next = then
            read("BW_ERR", Reg.ERRORS, "BW_END")
            with m.State("BW_END"):
                m.d.sync += [got.eq(crc), bad.eq(bad | (got != 0))]
                m.next = "BW_PUT"
            put("BW_PUT", 2, "BW_FIN")
            with m.State("BW_FIN"):
                finish(Mux(bad, P.Status.TOO_BIG, P.Status.OK))

            # --- STEP: (index u16, delta i16) pairs, then the step; its outputs into the outputs buffer
            read("ST_LAYERS", Reg.LAYERS, "ST_L")
            with m.State("ST_L"):
                with m.If(got == 0):
                    finish(P.Status.NO_MODEL)
                with m.Else():
                    m.next = "ST_HID"
            read("ST_HID", Reg.HIDDEN, "ST_H")
            with m.State("ST_H"):
                m.d.sync += hidden.eq(got)
                with m.If(got == 0):
                    finish(P.Status.NO_MODEL)
                with m.Else():
                    m.next = "ST_CLS"
            read("ST_CLS", Reg.CLASSES, "ST_C")
            with m.State("ST_C"):
                m.d.sync += n_out.eq(Mux(got != 0, got, hidden))
                m.next = "ST_CLR"
            core("ST_CLR", Op.WRITE, errors_addr, 0, "ST")
            items("ST", 4, "ST_ERR")
            core("ST_DO", Op.DELTA, word[16:32], word[32:48].as_signed(), "ST")
            read("ST_ERR", Reg.ERRORS, "ST_E")
            with m.State("ST_E"):
                with m.If(got != 0):
                    finish(P.Status.OUT_OF_RANGE)
                with m.Else():
                    m.d.sync += [outs.eq(0), out_len.eq(0)]
                    m.next = "ST_GO"
            core("ST_GO", Op.STEP, 0, 0, "ST_OUT")
            with m.State("ST_OUT"):
                with m.If(outs == n_out):
                    m.next = "ST_CYC"
                with m.Else():
                    m.d.comb += self.rsp.ready.eq(1)
                    with m.If(self.rsp.valid):
                        m.d.comb += [out_wr.addr.eq(outs), out_wr.data.eq(self.rsp.payload[:16]), out_wr.en.eq(1)]
                        m.d.sync += [outs.eq(outs + 1), out_len.eq(out_len + 2)]
            read("ST_CYC", Reg.STEP_CYCLES, "ST_CYC_LO")
            for half in (0, 1):
                with m.State(("ST_CYC_LO", "ST_CYC_HI")[half]):
                    m.d.comb += [out_wr.addr.eq(outs), out_wr.data.eq(got.word_select(half, 16)), out_wr.en.eq(1)]
                    m.d.sync += [outs.eq(outs + 1), out_len.eq(out_len + 2)]
                    if half == 0:
                        m.next = "ST_CYC_HI"
                    else:
                        m.d.sync += [from_outputs.eq(1), rlen.eq(out_len + 2)]
                        finish(P.Status.OK)

            # --- READ_COUNTERS: cycles u64, steps u64, step cycles u32, errors u32
            read("RC_CYC", Reg.CYCLES, "RC_PUT0")                    # (latches CYCLES_HI)
            put("RC_PUT0", 4, "RC_HI")
            read("RC_HI", Reg.CYCLES_HI, "RC_PUT1")
            put("RC_PUT1", 4, "RC_STEPS")
            read("RC_STEPS", Reg.STEPS, "RC_PUT2")
            put("RC_PUT2", 8, "RC_SC")
            read("RC_SC", Reg.STEP_CYCLES, "RC_PUT3")
            put("RC_PUT3", 4, "RC_ER")
            read("RC_ER", Reg.ERRORS, "RC_PUT4")
            put("RC_PUT4", 4, "OK")

            # --- the reply: SYNC, status, SEQ, LEN, payload, CRC over status .. payload. Each byte is
            # prepared in three cycles before it is offered (the memories' words registered as they
            # leave them, then the byte registered): no memory or multiplexer lies before the CRC, and
            # the UART takes a byte far more slowly.
            rlen16 = Signal(16)
            m.d.comb += rlen16.eq(rlen)
            header = Cat(Const(P.REPLY_SYNC, 8), status, self.seq, rlen16)
            n = P.HEADER_BYTES
            tx_byte = Signal(8)
            with m.State("SEND_RD"):          # the payload byte's word addressed (from `sent`, below)
                m.next = "SEND_Q"
            with m.State("SEND_Q"):           # ... read, and registered
                m.next = "SEND_BYTE"
            with m.State("SEND_BYTE"):
                index = Signal.like(sent)
                m.d.comb += index.eq(sent - n)
                with m.If(sent < n):
                    m.d.sync += tx_byte.eq(header.word_select(sent[:3], 8))
                with m.Elif(sent < n + rlen):
                    m.d.sync += tx_byte.eq(Mux(from_outputs, out_q.word_select(index[0], 8), rep_q))
                with m.Elif(sent == n + rlen):
                    m.d.sync += tx_byte.eq(crc[:8])
                with m.Else():
                    m.d.sync += tx_byte.eq(crc[8:])
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_byte), crc_in.eq(tx_byte)]
                with m.If(self.tx.ready):
                    m.d.sync += sent.eq(sent + 1)
                    with m.If((sent >= 1) & (sent < n + rlen)):
                        m.d.sync += crc.eq(crc_next)
                    with m.If(sent == n + rlen + 1):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "SEND_RD"
        return m


class Link(wiring.Component):
    """A board without its UART: the frame receiver, the command executor and the core; bytes in, bytes out.

    Members
    -------
    rx : In(stream.Signature(8))
        Request bytes.
    tx : Out(stream.Signature(8))
        Reply bytes.
    """

    def __init__(self, params: DeviceParams, clock_hz: int, baud: int, max_payload: int = P.MAX_PAYLOAD,
                 timeout: int = 100_000):
        self.p, self.clock_hz, self.baud = params, clock_hz, baud
        self.max_payload, self.timeout = max_payload, timeout
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = rcv = FrameReceiver(self.max_payload, self.timeout)
        m.submodules.executor = ex = CommandExecutor(self.p, self.clock_hz, self.baud, self.max_payload)
        m.submodules.core = core = Core(self.p)
        wiring.connect(m, wiring.flipped(self.rx), rcv.rx)
        wiring.connect(m, ex.tx, wiring.flipped(self.tx))
        if core.wide:
            # the executor's command decoding and the core's in two cycles (an ECP5's critical path); an
            # iCE40 core (at most WIDE_LANES lanes) has no logic cells for the register
            m.submodules.cmd_reg = cmd_reg = StreamRegister(command_layout())
            wiring.connect(m, ex.cmd, cmd_reg.i)
            wiring.connect(m, cmd_reg.o, core.cmd)
        else:
            wiring.connect(m, ex.cmd, core.cmd)
        wiring.connect(m, core.rsp, ex.rsp)
        m.d.comb += [ex.valid.eq(rcv.valid), ex.code.eq(rcv.code), ex.seq.eq(rcv.seq), ex.length.eq(rcv.length),
                     ex.crc_ok.eq(rcv.crc_ok), rcv.ack.eq(ex.ack), rcv.buf_addr.eq(ex.buf_addr),
                     ex.buf_data.eq(rcv.buf_data)]
        return m
