"""Activation ROMs against the golden model's tables, over every 16-bit input."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from deltarnn.hw.activation import Activation
from deltarnn.spec import contract as C

from tests.conftest import FULL


@pytest.mark.parametrize("ports", [1, 2])
@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "relu"])
def test_activation_matches_contract_on_every_input(kind, registered, ports):
    dut = Activation(kind, registered=registered, ports=ports)
    assert dut.latency == (4 if registered else 1)
    if FULL or kind == "relu":
        xs = np.arange(C.FX_MIN, C.FX_MAX + 1, 1 if kind != "relu" else 97)
    else:  # both sides of every table entry's boundary, and the extremes
        edges = (np.arange(1 << C.LUT_ADDR_BITS) - (1 << (C.LUT_ADDR_BITS - 1))) << C.LUT_SHIFT[kind]
        xs = np.unique(np.concatenate([edges, edges - 1, [C.FX_MIN, C.FX_MAX, 0]]))
        xs = xs[(xs >= C.FX_MIN) & (xs <= C.FX_MAX)]
    inputs = [xs, xs[::-1]][:ports]        # the second port reads other entries in the same cycles
    want = [{"sigmoid": C.sigmoid, "tanh": C.tanh, "relu": C.relu}[kind](v) for v in inputs]
    got = [np.empty_like(xs) for _ in inputs]

    async def tb(ctx):
        # a new input every cycle; each output dut.latency cycles after its input
        for i in range(len(xs) + dut.latency - 1):
            for j, v in enumerate(inputs):
                if i < len(xs):
                    ctx.set(dut.x[j], int(v[i]))
            await ctx.tick()
            if i >= dut.latency - 1:
                for j in range(ports):
                    got[j][i - dut.latency + 1] = ctx.get(dut.y[j])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("kind", ["sigmoid", "relu"])
def test_activation_holds_while_en_is_low(kind, registered):
    """The engine's stalls: with ``en`` low no register moves, the table's output included, so every value comes
    out ``latency`` cycles of ``en`` after its input, whatever cycles without ``en`` lie between."""
    dut = Activation(kind, registered=registered)
    rng = np.random.default_rng(3)
    xs = rng.integers(C.FX_MIN, C.FX_MAX + 1, 60)
    en = rng.random(200) < 0.5
    f = {"sigmoid": C.sigmoid, "relu": C.relu}[kind]
    got = []

    async def tb(ctx):
        fed = 0             # inputs taken (one per cycle of en)
        for cycle in range(len(en)):
            ctx.set(dut.en, int(en[cycle]))
            ctx.set(dut.x[0], int(xs[min(fed, len(xs) - 1)]))
            await ctx.tick()
            if en[cycle]:
                fed += 1
                if fed >= dut.latency:
                    got.append(ctx.get(dut.y[0]))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert len(got) > 40
    np.testing.assert_array_equal(got, f(xs[np.minimum(np.arange(len(got)), len(xs) - 1)]))


def test_two_ports_share_one_ecp5_block():
    """Two engine lanes read one table through an ECP5 block RAM's two ports: one DP16KD, not two."""
    from amaranth import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from deltarnn.fpga.synth import synth_stats

    class Lanes(wiring.Component):        # plain ports around the unit's arrays
        def __init__(self, ports):
            self.ports = ports
            super().__init__({"a": In(C.FX_BITS * ports), "b": Out(C.FX_BITS * ports)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.act = act = Activation("tanh", registered=True, ports=self.ports)
            for i in range(self.ports):
                m.d.comb += [act.x[i].eq(self.a.word_select(i, C.FX_BITS)),
                             self.b.word_select(i, C.FX_BITS).eq(act.y[i])]
            return m

    for ports in (1, 2):
        assert synth_stats(Lanes(ports), "ecp5")["ram_blocks"] == {"DP16KD": 1}


def test_bad_port_count():
    with pytest.raises(ValueError, match="1 or 2 read ports, not 3"):
        Activation("tanh", ports=3)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        Activation("gelu")
