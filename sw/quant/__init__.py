"""Quantization: the QModel file, the quantizer and the bit-exact golden model.

- :mod:`deltarnn.quant.qmodel`: :class:`~deltarnn.quant.qmodel.QModel`, the one
  versioned file every stage hands on;
- :mod:`deltarnn.quant.quantizer`: a float model to a QModel (MMSE clipping,
  skipped paths; imports torch);
- :mod:`deltarnn.quant.golden`: the integer emulation that specifies the
  hardware, with its operation counts (numpy only).
"""
