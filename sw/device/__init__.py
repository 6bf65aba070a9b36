"""The host's side of the device: a QModel packed into a core's memories.

- :mod:`deltarnn.device.image`: :func:`~deltarnn.device.image.pack`,
  :func:`~deltarnn.device.image.check_fits` and the layer-0
  :func:`~deltarnn.device.image.input_deltas` of a sequence.

The memory map itself is :mod:`deltarnn.spec.memory_map`, shared with the gateware.
"""
