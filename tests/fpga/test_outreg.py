"""The ECP5 output-register pass (deltarnn.fpga.outreg) on Yosys' netlists of small designs."""

import json
import re
import subprocess

from amaranth import Module, Mux, Signal
from amaranth.back import rtlil
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from deltarnn.fpga.outreg import absorb_in_file, absorb_output_registers
from deltarnn.fpga.toolchain import require_tools, setup_environment


class Reads(wiring.Component):
    """Four block RAMs: read into a plain register, into a register with an enable active low, into a
    register behind logic, and into two registers of different enables."""

    def __init__(self):
        super().__init__({"addr": In(10), "we": In(1), "data": In(16), "hold": In(1), "sel": In(1),
                          "plain": Out(16), "held": Out(16), "mixed": Out(16), "twice": Out(32)})

    def elaborate(self, platform):
        m = Module()
        reads = []
        for name in ("plain", "held", "mixed", "twice"):
            mem = m.submodules[name] = memory.Memory(shape=16, depth=1024, init=[])
            wr, rd = mem.write_port(), mem.read_port()
            m.d.comb += [wr.addr.eq(self.addr), wr.data.eq(self.data), wr.en.eq(self.we),
                         rd.addr.eq(self.addr), rd.en.eq(1)]
            reads.append(rd.data)
        plain, held, mixed, twice = reads
        # registers without a reset, as the core's behind its memories
        q = {name: Signal(len(getattr(self, name)), name=f"{name}_q", reset_less=True)
             for name in ("plain", "held", "mixed", "twice")}
        m.d.comb += [getattr(self, name).eq(value) for name, value in q.items()]
        m.d.sync += q["plain"].eq(plain)
        with m.If(~self.hold):
            m.d.sync += q["held"].eq(held)
        m.d.sync += q["mixed"].eq(Mux(self.sel, mixed, ~mixed))
        with m.If(self.hold):
            m.d.sync += q["twice"][:16].eq(twice)
        m.d.sync += q["twice"][16:].eq(twice)
        return m


def _netlist(tmp_path):
    setup_environment()
    tools = require_tools("YOSYS")
    (tmp_path / "top.il").write_text(rtlil.convert(Reads(), name="top"))
    # (collisions left undefined as the core's builds do: no old-data emulation behind the blocks)
    (tmp_path / "top.ys").write_text("read_rtlil top.il\nsetparam -set COLLISION_X_MASK 1 t:$memrd_v2\n"
                                     "synth_ecp5 -top top\nwrite_json top.json\n")
    subprocess.run([tools["YOSYS"], "-q", "top.ys"], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path / "top.json"


def _rams(netlist):
    top = next(m for m in netlist["modules"].values() if m["attributes"].get("top"))
    return {_memory(name): cell for name, cell in top["cells"].items() if cell["type"] == "DP16KD"}, top


def _memory(key):
    """The memory of a block's or a port's name (``plain$39.0.0.A``: ``plain``)."""
    return key.split(".")[0].split("$")[0]


def test_registers_move_into_the_block_rams(tmp_path):
    path = _netlist(tmp_path)
    netlist = json.loads(path.read_text())
    flops = sum(c["type"] == "TRELLIS_FF" for c in _rams(netlist)[1]["cells"].values())
    result = absorb_output_registers(netlist)
    rams, top = _rams(netlist)
    moved = {_memory(key) for key in result.ports}
    assert moved == {"plain", "held"}, result.kept
    assert {_memory(key) for key in result.kept} == {"mixed", "twice"}
    assert result.flops == 32 and sum(c["type"] == "TRELLIS_FF" for c in top["cells"].values()) == flops - 32
    for name in ("plain", "held"):
        cell = rams[name]
        side = next(s for s in "AB" if cell["parameters"].get(f"REGMODE_{s}") == "OUTREG")
        out_bits = [cell["connections"][f"DO{side}{i}"][0] for i in range(16)]
        port = top["ports"][name]["bits"]
        assert out_bits == port                  # the block drives what the flip-flops drove
    # the enable active low reaches OCE through an inverter
    held = rams["held"]
    side = next(s for s in "AB" if held["parameters"].get(f"REGMODE_{s}") == "OUTREG")
    oce = held["connections"][f"OCE{side}"][0]
    inverter = next(c for c in top["cells"].values() if c["connections"].get("Z") == [oce])
    assert inverter["type"] == "LUT4" and inverter["connections"]["A"] == top["ports"]["hold"]["bits"]
    assert rams["mixed"]["parameters"]["REGMODE_A"] == rams["mixed"]["parameters"]["REGMODE_B"] == "NOREG"


def test_nextpnr_takes_the_rewritten_netlist(tmp_path):
    """Place and route the rewritten netlist: the registered blocks' clock to output is the output register's."""
    path = _netlist(tmp_path)
    assert absorb_in_file(path).flops == 32
    assert absorb_in_file(path).ports == []      # a second pass finds nothing more
    tools = require_tools("NEXTPNR_ECP5")
    run = subprocess.run([tools["NEXTPNR_ECP5"], "--85k", "--package", "CABGA381", "--json", "top.json",
                          "--textcfg", "top.config", "--freq", "200", "--timing-allow-fail"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    config = (tmp_path / "top.config").read_text()
    assert len(re.findall(r"REGMODE_[AB] OUTREG", config)) == 2       # the two registered read ports
