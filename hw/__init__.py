"""The gateware, in Amaranth: a delta-sparse integer RNN core.

- :mod:`deltarnn.hw.mxv`: :class:`~deltarnn.hw.mxv.DeltaMxV`, the P-lane delta-sparse matrix-vector unit;
- :mod:`deltarnn.hw.encoder`: :class:`~deltarnn.hw.encoder.DeltaEncoder`, fixed point to deltas above threshold;
- :mod:`deltarnn.hw.activation`: sigmoid / tanh ROMs and ReLU;
- :mod:`deltarnn.hw.engine`: :class:`~deltarnn.hw.engine.CellEngine`, the cell update micro-programs;
- :mod:`deltarnn.hw.command`: the command word's shapes (:class:`~deltarnn.hw.command.Op`, regions, addresses);
- :mod:`deltarnn.hw.registers`: :class:`~deltarnn.hw.registers.RegisterFile`, the core's registers;
- :mod:`deltarnn.hw.core`: :class:`~deltarnn.hw.core.Core`, memories, command decoder and step sequencer;
- :mod:`deltarnn.hw.cycles`: the exact cycle model of a step;
- :mod:`deltarnn.hw.drive`: drives a core in the Amaranth simulator.

The gateware imports :mod:`deltarnn.spec` and nothing else of the project:
never torch, never the QModel file format.
"""
