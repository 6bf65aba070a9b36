"""Move the flip-flops behind ECP5 block RAMs into the blocks' own output registers.

An ECP5 DP16KD read without its output register (``REGMODE = "NOREG"``, all
Yosys maps) delivers its data 5.6 ns after the clock edge in nextpnr's timing
model; with the register (``"OUTREG"``) 1.0 ns. Yosys cannot map a two-cycle
read, so the design writes the register itself, right behind the memory (a
register whose input is the read data and nothing else), and this pass, run on
Yosys' JSON netlist before nextpnr, moves it into the block:

- a read port's data bits (``DOA*``, ``DOB*``, or both for a 36-bit read)
  each drive one ``TRELLIS_FF``'s ``DI`` and nothing else;
- those flip-flops share the port's clock (rising edge), one clock enable (or
  none), and have no set or reset beyond the power-up zero (``REGSET RESET``,
  ``LSR`` tied low);

then the port's ``REGMODE`` becomes ``"OUTREG"``, its ``OCE`` takes the
flip-flops' enable (through a new inverter where they took it active low),
the flip-flops' outputs are driven by the block, and the flip-flops go. The block register holds its value while ``OCE`` is low and
powers up at zero, as the flip-flops did: the design's behaviour, cycle by
cycle, does not change, so its simulation stays the specification.

The multiplier blocks (``MULT18X18D``) get the same treatment on both sides
(:func:`absorb_multiplier_registers`): the flip-flops that drive a block's
``A`` and ``B`` inputs (each flip-flop's output going to multiplier inputs
only: every block it drives keeps a copy) become its input registers, and the
flip-flops that its used ``P`` outputs drive (each output one flip-flop's
``DI``, nothing else) its output register. Without them nextpnr routes a
register to a block placed far away and the product back again in one cycle
(the ULX3S board's critical path, 12.24 ns, 7.79 of them routing).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Absorbed", "absorb_in_file", "absorb_multiplier_registers", "absorb_output_registers"]

_FF = "TRELLIS_FF"
_RAM = "DP16KD"
_MULT = "MULT18X18D"


@dataclass
class Absorbed:
    """What :func:`absorb_output_registers` did: ``ports`` moved into their blocks (``"cell.A"``, ``"cell.B"``,
    ``"cell.AB"`` for a 36-bit read), ``flops`` removed, and the read ports left as they were with the reason."""

    ports: list[str] = field(default_factory=list)
    flops: int = 0
    kept: dict[str, str] = field(default_factory=dict)
    #: multiplier blocks' register groups moved in (``"cell.in"``, ``"cell.out"``), and the flip-flops removed
    multipliers: list[str] = field(default_factory=list)
    multiplier_flops: int = 0

    def as_dict(self) -> dict:
        return {"ports": len(self.ports), "flops": self.flops, "kept": len(self.kept),
                "multipliers": len(self.multipliers), "multiplier_flops": self.multiplier_flops}


def _param(cell, name, default=""):
    return str(cell["parameters"].get(name, default)).strip()


def _width(cell, name) -> int:
    value = _param(cell, name, "18")
    return int(value, 2) if set(value) <= {"0", "1"} and len(value) > 8 else int(value)


def _net(cell, port):
    bits = cell["connections"].get(port)
    return bits[0] if bits else None


def _enable(ff):
    """A flip-flop's clock enable: ``"1"`` (none), ``(net, active_low)``, or None (a mode no block register has)."""
    cemux = _param(ff, "CEMUX", "1")
    return "1" if cemux == "1" else (_net(ff, "CE"), cemux == "INV") if cemux in ("CE", "INV") else None


def _enable_net(module: dict, inverted: dict, enable):
    """The net of an :func:`_enable` active high (``"1"`` for none): an active-low one through an inverter,
    one per net (``inverted``: net -> its inverter's output)."""
    if enable == "1" or not enable[1]:
        return enable if enable == "1" else enable[0]
    return inverted.setdefault(enable[0], _inverter(module, enable[0]))


def _outputs(module: dict) -> set:
    """Net bits of the module's output ports."""
    return {bit for port in module.get("ports", {}).values() if port["direction"] != "input" for bit in port["bits"]}


def _inverter(module: dict, bit) -> int:
    """Add a LUT4 that drives a new net with ``not bit``; return the net."""
    nets = [b for c in module["cells"].values() for bits in c["connections"].values() for b in bits]
    nets += [b for n in module.get("netnames", {}).values() for b in n["bits"]]
    out = max(b for b in nets if isinstance(b, int)) + 1
    module["cells"][f"$outreg_not${out}"] = {
        "hide_name": 1, "type": "LUT4", "parameters": {"INIT": "0101010101010101"}, "attributes": {},
        "port_directions": {"A": "input", "B": "input", "C": "input", "D": "input", "Z": "output"},
        "connections": {"A": [bit], "B": ["0"], "C": ["0"], "D": ["0"], "Z": [out]}}
    module["netnames"][f"$outreg_not${out}"] = {"hide_name": 1, "bits": [out], "attributes": {}}
    return out


def absorb_output_registers(netlist: dict) -> Absorbed:
    """Rewrite Yosys' JSON ``netlist`` (as loaded) in place; return what moved.

    Only the top module is rewritten (a flattened design's cells all live there).
    """
    result = Absorbed()
    top = _top(netlist)
    if top is None:
        return result
    cells = top["cells"]
    sinks = _sinks(cells)
    outputs = _outputs(top)
    inverted = {}                        # an active-low enable -> its inverter's output
    for name, cell in list(cells.items()):
        if cell["type"] != _RAM:
            continue
        if _width(cell, "DATA_WIDTH_B") == 36:
            groups = {"AB": ("B", [f"DOA{i}" for i in range(18)] + [f"DOB{i}" for i in range(18)])}
        else:
            groups = {s: (s, [f"DO{s}{i}" for i in range(18)]) for s in "AB"}
        for label, (side, pins) in groups.items():
            key = f"{name}.{label}"
            used = [(pin, cell["connections"][pin][0]) for pin in pins
                    if cell["connections"].get(pin) and sinks.get(cell["connections"][pin][0])]
            if not used:
                continue
            if _param(cell, f"REGMODE_{side}", "NOREG") != "NOREG":
                result.kept[key] = "already registered"
                continue
            reason, flops, enable = None, [], None
            for pin, bit in used:
                users = sinks[bit]
                if bit in outputs or len(users) != 1 or users[0][1] != "DI" or cells[users[0][0]]["type"] != _FF:
                    reason = f"{pin} drives logic"
                    break
                ff = cells[users[0][0]]
                if _net(ff, "CLK") != _net(cell, f"CLK{side}") or _param(ff, "CLKMUX", "CLK") != "CLK" \
                        or _param(cell, f"CLK{side}MUX", f"CLK{side}") != f"CLK{side}":
                    reason = f"{pin}'s register has another clock"
                    break
                if _net(ff, "LSR") not in (None, "0") or _param(ff, "REGSET", "RESET") != "RESET":
                    reason = f"{pin}'s register has a set or reset"
                    break
                ce = _enable(ff)
                if ce is None or (enable is not None and ce != enable):
                    reason = f"{pin}'s register has another enable"
                    break
                enable = ce
                flops.append((pin, users[0][0]))
            if reason:
                result.kept[key] = reason
                continue
            for pin, ff_name in flops:
                cell["connections"][pin] = cells[ff_name]["connections"]["Q"]
                del cells[ff_name]
            enable = _enable_net(top, inverted, enable)
            cell["parameters"][f"REGMODE_{side}"] = "OUTREG"
            cell["connections"][f"OCE{side}"] = [enable]
            if label == "AB":        # the 36-bit read's high half: registered by port A's mode as well
                cell["parameters"]["REGMODE_A"] = "OUTREG"
                cell["connections"]["OCEA"] = [enable]
            result.ports.append(key)
            result.flops += len(flops)
    return result


def _control(ff):
    """A flip-flop's ``(clock, enable, reset)`` as a multiplier block's register takes them, or None: a rising
    edge, no set; enable ``"1"`` or ``(net, active_low)``; reset ``"0"``, or a synchronous reset's net where
    there is no enable (the block's synchronous reset then does what the flip-flop's does, whatever the order
    of reset and enable in the block)."""
    if _param(ff, "CLKMUX", "CLK") != "CLK" or _param(ff, "REGSET", "RESET") != "RESET":
        return None
    enable = _enable(ff)
    reset = _net(ff, "LSR")
    if reset in (None, "0"):
        reset = "0"
    elif isinstance(reset, str) or _param(ff, "LSRMUX", "LSR") != "LSR" \
            or _param(ff, "SRMODE", "LSR_OVER_CE") != "LSR_OVER_CE" or enable != "1":
        return None
    return None if enable is None else (_net(ff, "CLK"), enable, reset)


def absorb_multiplier_registers(netlist: dict, result: Absorbed | None = None) -> Absorbed:
    """Move the registers before and after ECP5 multiplier blocks into the blocks, in place; return (or add to
    ``result``) what moved.

    A block takes its input registers when every variable bit of ``A`` and ``B`` comes from a flip-flop whose
    output goes to multiplier inputs only (and its constant bits are 0, the registers' power-up value), with
    one clock, and one enable and reset per input; its output register when each used ``P`` bit drives one
    flip-flop's ``DI`` alone, on the same clock. The output register takes the block's ``CE0`` and ``RST0``
    (nextpnr sets no other for it), the inputs the same where theirs are the same, else ``CE1`` / ``RST1``,
    ``CE2`` / ``RST2``. Input flip-flops left without a load are removed.
    """
    result = result if result is not None else Absorbed()
    top = _top(netlist)
    if top is None:
        return result
    cells = top["cells"]
    sinks = _sinks(cells)
    drivers = {bit: (name, port) for name, cell in cells.items() for port, bits in cell["connections"].items()
               if cell.get("port_directions", {}).get(port) == "output" for bit in bits if isinstance(bit, int)}
    outputs = _outputs(top)

    def multiplier_input(sink) -> bool:
        name, port = sink
        return cells[name]["type"] == _MULT and port[:1] in ("A", "B") and port[1:].isdigit()

    def from_multiplier(bit) -> bool:
        """(a flip-flop between two blocks moves into neither: it is one register, not one in each)"""
        driver = drivers.get(bit)
        return driver is not None and cells[driver[0]]["type"] == _MULT

    def inputs(cell):
        """``({pin: the flip-flop's DI}, {side: control}, flip-flops)`` of the input registers, or None."""
        moved, controls, flops = {}, {}, set()
        for side in "AB":
            found = set()
            for i in range(18):
                bit = _net(cell, f"{side}{i}")
                if bit is None or isinstance(bit, str):
                    if bit not in (None, "0", "x"):
                        return None
                    continue
                driver = drivers.get(bit)
                if driver is None or driver[1] != "Q" or cells[driver[0]]["type"] != _FF or bit in outputs \
                        or not all(multiplier_input(s) for s in sinks[bit]) \
                        or from_multiplier(_net(cells[driver[0]], "DI")):
                    return None
                control = _control(cells[driver[0]])
                if control is None:
                    return None
                found.add(control)
                moved[f"{side}{i}"] = cells[driver[0]]["connections"]["DI"]
                flops.add(driver[0])
            if len(found) > 1:
                return None
            if found:
                controls[side] = found.pop()
        return (moved, controls, flops) if moved else None

    def output(cell):
        """``({pin: the flip-flop's Q}, control, flip-flops)`` of the output register, or None."""
        moved, found, flops = {}, set(), []
        for i in range(36):
            bit = _net(cell, f"P{i}")
            if bit is None or isinstance(bit, str) or not sinks.get(bit):
                continue
            users = sinks[bit]
            if bit in outputs or len(users) != 1 or users[0][1] != "DI" or cells[users[0][0]]["type"] != _FF \
                    or any(multiplier_input(s) for s in sinks[_net(cells[users[0][0]], "Q")]):
                return None
            control = _control(cells[users[0][0]])
            if control is None:
                return None
            found.add(control)
            moved[f"P{i}"] = cells[users[0][0]]["connections"]["Q"]
            flops.append(users[0][0])
        return (moved, found.pop(), flops) if moved and len(found) == 1 else None

    def connect(cell, pin, bit):
        cell["connections"][pin] = [bit]
        cell.setdefault("port_directions", {})[pin] = "input"

    inverted = {}
    candidates = set()                   # input flip-flops copied into blocks
    for name, cell in list(cells.items()):
        if cell["type"] != _MULT or any(_param(cell, f"REG_{r}_CLK", "NONE") != "NONE"
                                        for r in ("INPUTA", "INPUTB", "INPUTC", "PIPELINE", "OUTPUT")):
            continue
        ins, out = inputs(cell), output(cell)
        clocks = {c[0] for c in ([*ins[1].values()] if ins else []) + ([out[1]] if out else [])}
        if len(clocks) > 1:              # (one clock for the block's registers: take the output's)
            ins = None
        slots = [out[1][1:]] if out else []     # (enable, reset) of CE0/RST0, CE1/RST1, ...

        def slot(control):
            if control[1:] not in slots:
                slots.append(control[1:])
            return slots.index(control[1:])

        if out:
            moved, control, flops = out
            cell["parameters"].update(REG_OUTPUT_CLK="CLK0", REG_OUTPUT_CE="CE0", REG_OUTPUT_RST="RST0")
            for pin, bits in moved.items():
                cell["connections"][pin] = bits
            for ff in flops:
                del cells[ff]
            connect(cell, "CLK0", control[0])
            result.multipliers.append(f"{name}.out")
            result.multiplier_flops += len(flops)
        if ins:
            moved, controls, flops = ins
            for side in "AB":
                control = controls.get(side) or next(iter(controls.values()))
                k = slot(control)
                cell["parameters"].update({f"REG_INPUT{side}_CLK": "CLK0", f"REG_INPUT{side}_CE": f"CE{k}",
                                           f"REG_INPUT{side}_RST": f"RST{k}"})
                connect(cell, "CLK0", control[0])
            for pin, bits in moved.items():
                cell["connections"][pin] = bits
            candidates |= flops
            result.multipliers.append(f"{name}.in")
        for k, (enable, reset) in enumerate(slots):
            connect(cell, f"CE{k}", _enable_net(top, inverted, enable))
            connect(cell, f"RST{k}", reset)
        if slots:
            cell["parameters"]["RESETMODE"] = "SYNC"
    still = _sinks(cells)
    for ff in candidates:
        if not still.get(cells[ff]["connections"]["Q"][0]):
            del cells[ff]
            result.multiplier_flops += 1
    return result


def _top(netlist: dict) -> dict | None:
    """The netlist's top module (a flattened design's cells all live there)."""
    return next((m for m in netlist["modules"].values()
                 if str(m.get("attributes", {}).get("top", "0")).strip("0") != ""), None)


def _sinks(cells: dict) -> dict:
    """Net bit -> ``[(cell, input port)]``."""
    sinks = defaultdict(list)
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            if cell.get("port_directions", {}).get(port) == "input":
                for bit in bits:
                    sinks[bit].append((name, port))
    return sinks


def absorb_in_file(path: str | Path) -> Absorbed:
    """:func:`absorb_output_registers`, then :func:`absorb_multiplier_registers`, on a Yosys JSON file, written
    back in place."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    result = absorb_multiplier_registers(netlist, absorb_output_registers(netlist))
    if result.ports or result.multipliers:
        path.write_text(json.dumps(netlist))
    return result
