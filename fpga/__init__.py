"""FPGA build tooling: the pip-installed toolchain, synthesis reports and the measurement harness.

- :mod:`deltarnn.fpga.toolchain`: finds YoWASP Yosys / nextpnr through the
  environment variables Amaranth reads;
- :mod:`deltarnn.fpga.synth`: synthesis and place-and-route of a design for
  iCE40 UP5K or ECP5 85F, with utilisation and Fmax;
- :mod:`deltarnn.fpga.harness`: a measurement top around the core, its
  configurations and baseline records (``benchmarks/results/synth/``);
- :mod:`deltarnn.fpga.boards`: the board wrappers (PLL, reset, serial pins)
  around :class:`deltarnn.hw.top.BoardTop`, and each board's default build;
- :mod:`deltarnn.fpga.build`: board builds (``deltarnn build``): bitstream,
  utilisation and Fmax report (``benchmarks/results/boards/``), flashing.
"""
