"""Activation ROMs against the golden model's tables, over every 16-bit input."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from deltarnn.hw.activation import Activation
from deltarnn.spec import contract as C

from tests.conftest import FULL


@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "relu"])
def test_activation_matches_contract_on_every_input(kind, registered):
    dut = Activation(kind, registered=registered)
    assert dut.latency == (3 if registered else 1)
    if FULL or kind == "relu":
        xs = np.arange(C.FX_MIN, C.FX_MAX + 1, 1 if kind != "relu" else 97)
    else:  # both sides of every table entry's boundary, and the extremes
        edges = (np.arange(1 << C.LUT_ADDR_BITS) - (1 << (C.LUT_ADDR_BITS - 1))) << C.LUT_SHIFT[kind]
        xs = np.unique(np.concatenate([edges, edges - 1, [C.FX_MIN, C.FX_MAX, 0]]))
        xs = xs[(xs >= C.FX_MIN) & (xs <= C.FX_MAX)]
    want = {"sigmoid": C.sigmoid, "tanh": C.tanh, "relu": C.relu}[kind](xs)
    got = np.empty_like(xs)

    async def tb(ctx):
        # a new input every cycle; each output dut.latency cycles after its input
        for i in range(len(xs) + dut.latency - 1):
            if i < len(xs):
                ctx.set(dut.x, int(xs[i]))
            await ctx.tick()
            if i >= dut.latency - 1:
                got[i - dut.latency + 1] = ctx.get(dut.y)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    np.testing.assert_array_equal(got, want)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        Activation("gelu")
