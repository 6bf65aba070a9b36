"""Verilog export and co-simulation of the gateware.

- :mod:`deltarnn.sim.verilog`: Verilog export of Amaranth designs;
- :mod:`deltarnn.sim.build_cache`: build directories, stamps and the Verilator runtime objects shared by builds;
- :mod:`deltarnn.sim.results`: cocotb's JUnit results, parsed and checked;
- :mod:`deltarnn.sim.runner`: cached cocotb builds and runs under Verilator or Icarus;
- :mod:`deltarnn.sim.cosim`: the whole core against the golden model
  (``deltarnn cosim``), with its cocotb testbench :mod:`deltarnn.sim.tb_core`.

Nothing is imported here: the submodules pull in Amaranth and cocotb.
"""
