"""Verilog export and co-simulation of the gateware.

- :mod:`sim.verilog`: Verilog export of Amaranth designs;
- :mod:`sim.runner`: cached cocotb builds and runs under Verilator or Icarus;
- :mod:`sim.cosim`: the whole core against the golden model
  (``deltarnn cosim``), with its cocotb testbench :mod:`sim.tb_core`.

Nothing is imported here: the submodules pull in Amaranth and cocotb.
"""
