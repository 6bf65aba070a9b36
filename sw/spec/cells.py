"""The four recurrent cells and the shape of their weight matrices.

One table, imported by the float models, the quantizer, the QModel file, the
golden model, the device memory map and the gateware.
"""

from __future__ import annotations

#: The cell types, in the order every table and command line lists them.
CELLS = ("lstm", "gru", "ligru", "sru")
#: Gate rows per hidden unit of each cell's input-path (x) matrix.
X_GATES = {"lstm": 4, "gru": 3, "ligru": 2, "sru": 3}
#: Gate rows per hidden unit of the hidden-path (h) matrix (SRU has none).
H_GATES = {"lstm": 4, "gru": 3, "ligru": 2, "sru": 0}
