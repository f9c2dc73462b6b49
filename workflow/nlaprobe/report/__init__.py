"""The report: aggregate results JSON -> `results/report.html` + `results/figures/<name>.png`.

inputs -> outputs: results JSON files (`{"meta": {...}, "data": {...}}`, SPEC §8; the name of an
aggregate is its file stem) -> one self-contained HTML page and one PNG per figure of the
registered aggregates.

The modules: `data` (loading the inputs, null-safe accessors), `format` (numbers, Intervals and
published comparisons as text), `figures` (matplotlib), `html` (the page: sections, tables).
What the report shows of an aggregate is declared by its module in nlaprobe.aggregates, which
references the renderers of `html` and `figures`.

Invariants:
- the page's images are exactly the PNG files, one per registered figure, drawn whatever
  subset of the aggregates the inputs hold (see `figures`, `html`);
- deterministic: the page and the PNG bytes depend only on the inputs;
- atomic: every PNG and the page are written under a temporary name and renamed on success;
  an unreadable input fails (DataError naming it) before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from nlaprobe import aggregates as AG
from nlaprobe.io import atomic_path, write_text
from nlaprobe.report.data import load_results
from nlaprobe.report.figures import draw_figure, figure_png
from nlaprobe.report.html import render_html

__all__ = ["draw_figure", "figure_png", "load_results", "render_html", "write_report"]

log = logging.getLogger(__name__)


def write_report(inputs: Sequence[str], out_html: str, figures_dir: str) -> None:
    """Load the results JSON files, draw every figure of the registered aggregates to
    `figures_dir/<name>.png` and write the page to `out_html`, all atomically."""
    results = load_results(inputs)
    log.info("report from %d results files: %s", len(results), ", ".join(results))
    figures: dict[str, bytes] = {}
    for name in AG.figure_names():
        fig = draw_figure(name, results)
        try:
            png = figure_png(fig)
        finally:
            fig.clear()
        with atomic_path(Path(figures_dir) / f"{name}.png") as tmp:
            tmp.write_bytes(png)
        figures[name] = png
    write_text(out_html, render_html(results, figures))
    log.info("wrote %s and %d figures in %s", out_html, len(figures), figures_dir)
