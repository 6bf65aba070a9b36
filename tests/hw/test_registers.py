"""The command word and the register file: shapes, widths and numbers from deltarnn.spec.memory_map.

The gateware's enums mirror the spec's plain IntEnums, the command layout
keeps the host protocol's 63 bits, every register is as wide as the spec
says (and holds what the host packs into it), and the core reads back what
was written, truncated to those widths.
"""

import numpy as np
import pytest
from amaranth.lib import data

from deltarnn.device.image import pack
from deltarnn.hw import command
from deltarnn.hw.core import Core, Path
from deltarnn.hw.drive import run_core
from deltarnn.hw.engine import Program
from deltarnn.hw.registers import RegisterFile
from deltarnn.quant.quantizer import quantize
from deltarnn.spec import contract as C
from deltarnn.spec import memory_map as M
from deltarnn.spec.cells import CELLS

from tests.helpers import random_input, random_model

PARAMS = M.DeviceParams("gru", lanes=4, max_input=12, max_hidden=20, max_layers=3, max_classes=8, wmem_bits=8,
                        abits=8, acc_bits=32)


@pytest.mark.parametrize("hw, spec", [(command.Op, M.Op), (command.Region, M.Region)])
def test_enums_mirror_the_spec(hw, spec):
    assert [(e.name, e.value) for e in hw] == [(e.name, int(e)) for e in spec]


def test_shapes():
    assert command.Op.as_shape().width == M.OP_BITS == 3
    assert command.Region.as_shape().width == M.ADDR_BITS - M.REGION_SHIFT
    assert Program.as_shape().width == Path.as_shape().width == 2
    layout = command.command_layout()
    assert [(name, field.offset, field.width) for name, field in layout] == [
        ("op", 0, M.OP_BITS), ("addr", M.OP_BITS, M.ADDR_BITS), ("data", M.OP_BITS + M.ADDR_BITS, M.DATA_BITS)]
    assert layout.size == M.OP_BITS + M.ADDR_BITS + M.DATA_BITS == 63
    assert layout["op"].shape is command.Op
    address = command.address_layout()
    assert address.size == M.ADDR_BITS
    assert (address["offset"].offset, address["offset"].width) == (0, M.REGION_SHIFT)
    assert address["region"].shape is command.Region
    assert data.Const(address, M.addr(M.Region.VEC, 0x123)).region == command.Region.VEC


def test_field_widths_come_from_the_contract():
    assert (1 << M.SHIFT_BITS) > C.SHIFT_MAX >= 1 << (M.SHIFT_BITS - 1)
    assert (1 << M.WIDTH_BITS) > C.MAX_BITS >= 1 << (M.WIDTH_BITS - 1)
    assert M.THETA_BITS == C.delta_bits(C.MAX_BITS) == C.MAX_BITS + 1
    assert set(PARAMS.layer_reg_bits()) == set(M.LayerReg)
    assert set(PARAMS.head_reg_bits()) == {M.Reg.HEAD_SHIFT, M.Reg.HEAD_A_MULT, M.Reg.HEAD_A_SHIFT,
                                           M.Reg.HEAD_A_BITS, M.Reg.HEAD_THETA, M.Reg.HEAD_SLICES, M.Reg.HEAD_WBASE}
    wide = M.DeviceParams("gru", wmem_bits=4, max_wbits=16)
    assert (wide.max_slices, wide.slice_bits, PARAMS.max_slices, PARAMS.slice_bits) == (4, 2, 1, 1)
    assert (1 << PARAMS.waddr_bits) >= PARAMS.weight_depth > 1 << (PARAMS.waddr_bits - 1)
    assert PARAMS.head_reg_bits()[M.Reg.HEAD_WBASE] == PARAMS.layer_reg_bits()[M.LayerReg.H_WBASE] == \
        PARAMS.waddr_bits


def _widths(p):
    """Expected width of every writable register, by address."""
    widths = {M.Reg.LAYERS: p.max_layers.bit_length(), M.Reg.INPUT: p.max_input.bit_length(),
              M.Reg.HIDDEN: p.max_hidden.bit_length(), M.Reg.CLASSES: p.max_classes.bit_length(),
              **p.head_reg_bits()}
    for i in range(p.max_layers):
        widths.update({M.layer_reg(i, f): bits for f, bits in p.layer_reg_bits().items()})
    return widths


def test_register_file_widths():
    regs = RegisterFile(PARAMS, {M.Reg.HIDDEN: 7, M.layer_reg(2, M.LayerReg.HA_THETA): 3})
    assert {int(a): len(s) for a, s in regs.writable.items()} == {int(a): w for a, w in _widths(PARAMS).items()}
    assert regs.hidden.init == 7 and regs.layer[M.LayerReg.HA_THETA][2].init == 3
    sizes = {M.Reg.LAYERS, M.Reg.INPUT, M.Reg.HIDDEN, M.Reg.CLASSES}
    assert set(regs.readable) & set(regs.writable) == sizes          # the other configuration is write-only
    assert set(regs.readable) >= sizes | {M.Reg.ID_CELL, M.Reg.CYCLES, M.Reg.STEP_CYCLES, M.Reg.STEPS, M.Reg.ERRORS}


@pytest.mark.parametrize("cell", CELLS)
def test_packed_registers_fit(cell):
    """Every register value the host packs (thresholds up to the largest delta) fits the register."""
    p = M.DeviceParams(cell, **{k: v for k, v in PARAMS.as_dict().items() if k != "cell"})
    qm = quantize(random_model(cell, 6, 9, 3, False, classes=5, seed=2), random_input(2, 12, 6, seed=3), 4, 8)
    qm.set_thresholds(2 * C.qmax(8), 2 * C.qmax(8))
    widths = _widths(p)
    for a, v in pack(qm, p).regs.items():
        assert 0 <= v < 1 << widths[a], (hex(a), v)


def test_core_reads_back_what_was_written():
    """WRITE of every register at values across its limits, then READ (the sizes, identification and
    counters; the simulator peeks at the write-only configuration registers)."""
    rng = np.random.default_rng(5)
    p = PARAMS
    widths = _widths(p)
    limits = p.reg_limits()
    assert set(limits) == {int(a) for a in widths}
    assert all(hi < 1 << widths[a] for a, (lo, hi) in limits.items())
    values = {a: int(rng.choice([lo, hi, rng.integers(lo, hi + 1)])) for a, (lo, hi) in limits.items()}
    writes = [(M.addr(M.Region.REG, a), v) for a, v in values.items()]
    ids = {M.Reg.ID_CELL: M.CELL_CODES["gru"], M.Reg.ID_LANES: p.lanes, M.Reg.ID_MAX_INPUT: p.max_input,
           M.Reg.ID_MAX_HIDDEN: p.max_hidden, M.Reg.ID_MAX_LAYERS: p.max_layers,
           M.Reg.ID_MAX_CLASSES: p.max_classes, M.Reg.ID_WMEM_BITS: p.wmem_bits, M.Reg.ID_ABITS: p.abits,
           M.Reg.ID_ACC_BITS: p.acc_bits, M.Reg.ID_MAX_WBITS: p.wmem_bits, M.Reg.ID_WEIGHT_WORDS: p.weight_depth,
           M.Reg.STEPS: 0, M.Reg.ERRORS: 0}
    run = run_core(Core(p), [], 0, writes=writes, read_regs=list(limits) + list(ids) + [M.Reg.CYCLES])
    assert {a: run.regs[a] for a in limits} == values
    assert {a: run.regs[int(a)] for a in ids} == ids
    assert 0 < run.regs[M.Reg.CYCLES] < 1000          # cycles since the RESET that run_core sends


def test_out_of_range_writes_are_refused_and_flagged():
    """A value beyond a register's limits leaves it as it was and sets BAD_VALUE; a write to no register,
    or to a read-only one, BAD_ADDR; a READ of no register answers 0 and sets BAD_ADDR; a WRITE to
    ERRORS clears them."""
    p = PARAMS
    reg = lambda a: M.addr(M.Region.REG, a)   # noqa: E731
    hidden, bits = M.Reg.HIDDEN, M.layer_reg(1, M.LayerReg.XA_BITS)
    good = [(reg(hidden), 7), (reg(bits), 5)]
    for a, v, err in [(hidden, p.max_hidden + 1, M.Error.BAD_VALUE), (bits, p.abits + 1, M.Error.BAD_VALUE),
                      (bits, 1, M.Error.BAD_VALUE), (hidden, 1 << 31, M.Error.BAD_VALUE),
                      (M.Reg.ID_LANES, 1, M.Error.BAD_ADDR), (0x7, 1, M.Error.BAD_ADDR)]:
        run = run_core(Core(p), [], 0, writes=good + [(reg(a), v)], read_regs=[hidden, bits, M.Reg.ERRORS])
        assert (run.regs[hidden], run.regs[bits], run.regs[M.Reg.ERRORS]) == (7, 5, err), (hex(a), v)
    wide = M.DeviceParams("gru", lanes=8, max_input=12, max_hidden=20, max_layers=3, max_classes=8, wmem_bits=8,
                          abits=8, acc_bits=32, engine_lanes=4)    # HIDDEN a multiple of the engine's lanes
    for v, err in [(8, 0), (6, M.Error.BAD_VALUE), (7, M.Error.BAD_VALUE)]:
        run = run_core(Core(wide), [], 0, writes=[(reg(hidden), 12), (reg(hidden), v)],
                       read_regs=[hidden, M.Reg.ERRORS])
        assert (run.regs[hidden], run.regs[M.Reg.ERRORS]) == (12 if err else v, err), v
    run = run_core(Core(p), [], 0, writes=good + [(reg(hidden), 1 << 20), (reg(M.Reg.ERRORS), 0)],
                   read_regs=[M.Reg.ERRORS, 0xFF, M.Reg.ERRORS])
    assert run.regs[0xFF] == 0 and run.regs[M.Reg.ERRORS] == M.Error.BAD_ADDR
