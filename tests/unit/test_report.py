"""The report's entry point (nlaprobe.report.write_report, SPEC §6 Report): the page and one PNG
per registered figure from results files, written atomically and deterministically."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from report_shapes import IMG, PNG_MAGIC, make_results

from nlaprobe import aggregates as AG
from nlaprobe import report as R
from nlaprobe.errors import DataError


def write_inputs(folder: Path, res: dict[str, dict]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, obj in res.items():
        p = folder / f"{name}.json"
        p.write_text(json.dumps(obj, sort_keys=True))
        paths.append(str(p))
    return paths


def test_write_report_files_are_complete_atomic_and_deterministic(tmp_path: Path):
    inputs = write_inputs(tmp_path / "in", make_results(without=("best_of_n",)))
    outs = []
    for run in ("a", "b"):
        html_path = tmp_path / run / "report.html"
        fig_dir = tmp_path / run / "figures"
        R.write_report(inputs, str(html_path), str(fig_dir))
        pngs = {p.name: p.read_bytes() for p in sorted(fig_dir.iterdir())}
        assert sorted(pngs) == sorted(f"{n}.png" for n in AG.figure_names())
        assert all(b.startswith(PNG_MAGIC) for b in pngs.values())
        page = html_path.read_text(encoding="utf-8")
        assert page.count(IMG) == len(AG.figure_names())
        assert sorted(p.name for p in (tmp_path / run).iterdir()) == ["figures", "report.html"]
        outs.append((page, pngs))
    assert outs[0] == outs[1]
    # the PNG files are exactly the images in the page
    for b in outs[0][1].values():
        assert base64.b64encode(b).decode() in outs[0][0]


def test_write_report_missing_input_names_it_and_writes_nothing(tmp_path: Path):
    missing = str(tmp_path / "in" / "layers.json")
    with pytest.raises(DataError, match=re.escape(missing)):
        R.write_report([missing], str(tmp_path / "out" / "report.html"), str(tmp_path / "fig"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "fig").exists()


def test_the_package_exposes_its_entry_points():
    from nlaprobe.report import data, figures, html

    assert R.write_report.__module__ == "nlaprobe.report"
    assert (R.load_results, R.render_html) == (data.load_results, html.render_html)
    assert (R.draw_figure, R.figure_png) == (figures.draw_figure, figures.figure_png)
