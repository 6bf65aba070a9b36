"""Human-readable tables of emulation statistics."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from deltarnn.quant.golden import Stats


def render(table: Table) -> str:
    """Render a rich table to plain text."""
    buf = io.StringIO()
    Console(file=buf, width=110, force_terminal=False, color_system=None).print(table)
    return buf.getvalue().rstrip("\n")


def stats_table(stats: Stats, title: str = "") -> str:
    """Per-path MACs, deltas and eliminated share, then the model totals."""
    t = Table(title=title or None)
    for col in ("path", "rows x cols", "deltas / elements", "MACs dense", "MACs needed", "eliminated %"):
        t.add_column(col, justify="left" if col == "path" else "right")
    for name, p in stats.paths.items():
        t.add_row(name, f"{p.rows} x {p.cols}", f"{p.deltas} / {p.elements}", f"{p.macs_dense:,}",
                  f"{p.macs_needed:,}", f"{p.eliminated_pct:.1f}")
    t.add_row("total", "", "", f"{stats.macs_dense:,}", f"{stats.macs_needed:,}", f"{stats.eliminated_pct:.1f}",
              end_section=True)
    size = (f"model size {stats.weight_bits / 8 / 1024:.1f} KiB quantized vs {stats.float_bits / 8 / 1024:.1f} KiB "
            f"fp32: compression {stats.compression_pct:.1f} %")
    return render(t) + "\n" + size
