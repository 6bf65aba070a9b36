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


def _netlist(tmp_path, design=None):
    """Yosys' ECP5 netlist of ``design`` (default :class:`Reads`): ``tmp_path/top.json``."""
    setup_environment()
    tools = require_tools("YOSYS")
    (tmp_path / "top.il").write_text(rtlil.convert(design or Reads(), name="top"))
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


def _place_and_route(tmp_path) -> str:
    """nextpnr on ``tmp_path/top.json``; its text configuration."""
    tools = require_tools("NEXTPNR_ECP5")
    run = subprocess.run([tools["NEXTPNR_ECP5"], "--85k", "--package", "CABGA381", "--json", "top.json",
                          "--textcfg", "top.config", "--freq", "200", "--timing-allow-fail"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return (tmp_path / "top.config").read_text()


def test_nextpnr_takes_the_rewritten_netlist(tmp_path):
    """Place and route the rewritten netlist: the registered blocks' clock to output is the output register's."""
    path = _netlist(tmp_path)
    assert absorb_in_file(path).flops == 32
    assert absorb_in_file(path).ports == []      # a second pass finds nothing more
    config = _place_and_route(tmp_path)
    assert len(re.findall(r"REGMODE_[AB] OUTREG", config)) == 2       # the two registered read ports


class Products(wiring.Component):
    """Seven multiplier blocks on the bits of ``a`` and ``b`` (16 each; case ``i`` rotated by ``i``): products
    between registers without a reset (``plain``), with an enable active low (``held``), with the domain's
    reset (``reset``), with a reset and an enable (``reset_held``: stays), a product into logic (``logic``: its
    inputs move, its output stays), and one operand register shared by two blocks (``shared0``, ``shared1``).
    Each output is a product's low 16 bits."""

    CASES = ("plain", "held", "reset", "reset_held", "logic", "shared0", "shared1")

    def __init__(self):
        super().__init__({"hold": In(1), "a": In(16), "b": In(16), **{f"p_{case}": Out(16) for case in self.CASES}})

    def elaborate(self, platform):
        m = Module()
        shared = Signal(16, name="shared_a", reset_less=True)
        m.d.sync += shared.eq(self.a.rotate_left(Products.CASES.index("shared0")))
        for i, case in enumerate(self.CASES):
            resets = case.startswith("reset")
            a, b = (Signal(16, name=f"{case}_{x}", reset_less=not resets) for x in "ab")
            p = Signal(16, name=f"{case}_p", reset_less=not resets)
            out = getattr(self, f"p_{case}")
            with m.If(~self.hold if case.endswith("held") else 1):
                m.d.sync += [a.eq(self.a.rotate_left(i)), b.eq(self.b.rotate_left(i))]
                if case == "logic":
                    m.d.comb += out.eq(a * b + 1)
                else:
                    m.d.sync += p.eq((shared if case.startswith("shared") else a) * b)
            if case != "logic":
                m.d.comb += out.eq(p)
        return m


class Chain(wiring.Component):
    """Two products in a row: ``p = (mid * b)``, ``mid = (a * b)``, every value a register without reset."""

    def __init__(self):
        super().__init__({"a": In(16), "b": In(16), "p": Out(16)})

    def elaborate(self, platform):
        m = Module()
        a, b, mid, p = (Signal(16, name=n, reset_less=True) for n in ("a_q", "b_q", "mid", "p_q"))
        m.d.sync += [a.eq(self.a), b.eq(self.b), mid.eq(a * b), p.eq(mid * b)]
        m.d.comb += self.p.eq(p)
        return m


def test_registers_move_into_the_multiplier_blocks(tmp_path):
    from deltarnn.fpga.outreg import absorb_multiplier_registers
    path = _netlist(tmp_path, Products())
    netlist = json.loads(path.read_text())
    top = next(m for m in netlist["modules"].values() if m["attributes"].get("top"))
    flops = sum(c["type"] == "TRELLIS_FF" for c in top["cells"].values())
    result = absorb_multiplier_registers(netlist)
    ports = top["ports"]
    mults = [c for c in top["cells"].values() if c["type"] == "MULT18X18D"]
    assert len(mults) == len(Products.CASES)

    def rotated(name, i):
        bits = ports[name]["bits"]
        return bits[-i:] + bits[:-i] if i else bits

    def block(case):
        """The block whose B pins are now the case's bits of ``b`` (its register moved in), or None."""
        want = rotated("b", Products.CASES.index(case))
        found = [c for c in mults if [c["connections"][f"B{i}"][0] for i in range(16)] == want]
        return found[0] if found else None

    registered = {}
    for case in Products.CASES:
        cell = block(case)
        if cell is None:
            registered[case] = None
            continue
        par = cell["parameters"]
        registered[case] = (par.get("REG_INPUTA_CLK"), par.get("REG_INPUTB_CLK"), par.get("REG_OUTPUT_CLK"))
        if par.get("REG_OUTPUT_CLK") == "CLK0":       # the block drives what the flip-flops drove
            assert [cell["connections"][f"P{i}"][0] for i in range(16)] == ports[f"p_{case}"]["bits"]
        index = Products.CASES.index("shared0" if case.startswith("shared") else case)
        assert [cell["connections"][f"A{i}"][0] for i in range(16)] == rotated("a", index)
    both = ("CLK0", "CLK0", "CLK0")
    assert registered == {"plain": both, "held": both, "reset": both, "reset_held": None,
                          "logic": ("CLK0", "CLK0", None), "shared0": both, "shared1": both}
    # the enable active low reaches CE0 through an inverter; the domain's reset reaches RST0
    held = block("held")
    inverter = next(c for c in top["cells"].values() if c["connections"].get("Z") == held["connections"]["CE0"])
    assert inverter["type"] == "LUT4" and inverter["connections"]["A"] == ports["hold"]["bits"]
    assert block("reset")["connections"]["RST0"] == ports["rst"]["bits"]
    assert block("plain")["connections"]["RST0"] == ["0"] and block("plain")["connections"]["CE0"] == ["1"]
    # every flip-flop moved but reset_held's 48 (Yosys merges the cases' identical operand bits first)
    left = sum(c["type"] == "TRELLIS_FF" for c in top["cells"].values())
    assert left == 48 and result.multiplier_flops == flops - left


def test_nextpnr_takes_the_registered_multipliers(tmp_path):
    """Place and route the rewritten netlist: nextpnr packs the registered blocks and configures their registers."""
    path = _netlist(tmp_path, Products())
    assert absorb_in_file(path).multipliers
    assert absorb_in_file(path).multipliers == []      # a second pass finds nothing more
    config = _place_and_route(tmp_path)
    assert len(re.findall(r"REG_INPUTA_CLK CLK0", config)) == 6        # every block but reset_held
    assert len(re.findall(r"REG_OUTPUT_CLK CLK0", config)) == 5        # and but logic


def test_a_register_between_two_multipliers_moves_into_neither(tmp_path):
    from deltarnn.fpga.outreg import absorb_multiplier_registers
    netlist = json.loads(_netlist(tmp_path, Chain()).read_text())
    result = absorb_multiplier_registers(netlist)
    top = next(m for m in netlist["modules"].values() if m["attributes"].get("top"))
    left = [name for name, c in top["cells"].items() if c["type"] == "TRELLIS_FF"]
    # mid stays, and b_q for the second block, whose inputs stay (mid among them); the first block has a copy
    assert sorted({name.split("_TRELLIS")[0] for name in left}) == ["b_q", "mid"] and len(left) == 32, left
    # the first block's inputs (a_q, b_q) and the second's output (p_q) moved
    assert sorted(key.rsplit(".", 1)[1] for key in result.multipliers) == ["in", "out"]
