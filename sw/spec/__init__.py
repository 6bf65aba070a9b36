"""What the host and the gateware share, defined once.

- :mod:`deltarnn.spec.contract`: the numeric contract (widths, rounding,
  saturation, activation tables, the delta rule; ``docs/datapath.md``);
- :mod:`deltarnn.spec.cells`: the cell types and the gate rows of their matrices;
- :mod:`deltarnn.spec.memory_map`: the device's parameters, memory regions,
  registers and opcodes (``docs/gateware.md``).

A leaf: these modules import numpy and the standard library only, so the
gateware can import them without the host's torch or file formats.
"""
