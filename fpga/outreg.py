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
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Absorbed", "absorb_output_registers", "absorb_in_file"]

_FF = "TRELLIS_FF"
_RAM = "DP16KD"


@dataclass
class Absorbed:
    """What :func:`absorb_output_registers` did: ``ports`` moved into their blocks (``"cell.A"``, ``"cell.B"``,
    ``"cell.AB"`` for a 36-bit read), ``flops`` removed, and the read ports left as they were with the reason."""

    ports: list[str] = field(default_factory=list)
    flops: int = 0
    kept: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"ports": len(self.ports), "flops": self.flops, "kept": len(self.kept)}


def _param(cell, name, default=""):
    return str(cell["parameters"].get(name, default)).strip()


def _width(cell, name) -> int:
    value = _param(cell, name, "18")
    return int(value, 2) if set(value) <= {"0", "1"} and len(value) > 8 else int(value)


def _net(cell, port):
    bits = cell["connections"].get(port)
    return bits[0] if bits else None


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
    modules = netlist["modules"]
    top = next((m for m in modules.values() if str(m.get("attributes", {}).get("top", "0")).strip("0") != ""),
               None)
    if top is None:
        return result
    cells = top["cells"]
    sinks = defaultdict(list)            # net bit -> [(cell, port)]
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            if cell.get("port_directions", {}).get(port) == "input":
                for bit in bits:
                    sinks[bit].append((name, port))
    outputs = {bit for port in top.get("ports", {}).values() if port["direction"] != "input"
               for bit in port["bits"]}

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
                cemux = _param(ff, "CEMUX", "1")
                ce = "1" if cemux == "1" else (_net(ff, "CE"), cemux == "INV") if cemux in ("CE", "INV") else None
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
            if enable != "1":
                enable = enable[0] if not enable[1] else inverted.setdefault(enable[0], _inverter(top, enable[0]))
            cell["parameters"][f"REGMODE_{side}"] = "OUTREG"
            cell["connections"][f"OCE{side}"] = [enable]
            if label == "AB":        # the 36-bit read's high half: registered by port A's mode as well
                cell["parameters"]["REGMODE_A"] = "OUTREG"
                cell["connections"]["OCEA"] = [enable]
            result.ports.append(key)
            result.flops += len(flops)
    return result


def absorb_in_file(path: str | Path) -> Absorbed:
    """:func:`absorb_output_registers` on a Yosys JSON file, written back in place."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    result = absorb_output_registers(netlist)
    if result.ports:
        path.write_text(json.dumps(netlist))
    return result
