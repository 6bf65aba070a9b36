"""deltarnn: quantized delta recurrent networks, from a PyTorch model to an FPGA.

The packages, from the ground up (each imports only those below it):

- :mod:`deltarnn.spec`: what the host and the gateware share: the numeric
  contract, the cells' gate tables, the device's memory map, registers and
  opcodes (numpy and the standard library only);
- :mod:`deltarnn.models`: the float models (PyTorch) and their canonical form;
- :mod:`deltarnn.hw`: the Amaranth gateware (it imports :mod:`deltarnn.spec` only);
- :mod:`deltarnn.quant`: the QModel file, the quantizer and the golden model;
- :mod:`deltarnn.device`: a QModel packed into a device image, input deltas;
- :mod:`deltarnn.speech`: speech corpora, training and the study;
- :mod:`deltarnn.fpga`: the FPGA toolchain, synthesis and its measurement harness;
- :mod:`deltarnn.sim`: Verilog export and cocotb co-simulation;
- :mod:`deltarnn.cli`: the ``deltarnn`` command.

Importing this package imports nothing else: the attributes below load their
module on first use.

>>> import deltarnn
>>> qm = deltarnn.quantize(model, calib_x)          # doctest: +SKIP
>>> deltarnn.emulate(qm, x).outputs                 # doctest: +SKIP
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "QModel": "deltarnn.quant.qmodel",
    "quantize": "deltarnn.quant.quantizer",
    "emulate": "deltarnn.quant.golden",
    "RNNModel": "deltarnn.models",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deltarnn' has no attribute {name!r}")
