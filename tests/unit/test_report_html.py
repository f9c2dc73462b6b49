"""The report page (nlaprobe.report.html): its tables from hand-built results dicts in the exact
shapes of the aggregates (report_shapes), escaping, self-containment, sections of absent and
unregistered aggregates, and the published-figures comparison."""

from __future__ import annotations

import html
import re

import pytest
from contract import E1_E8
from report_shapes import (
    IMG,
    PNG_MAGIC,
    make_results,
    paper_checkpoints,
    paper_results,
    without_train,
)

from nlaprobe import aggregates as AG
from nlaprobe import published as P
from nlaprobe.report import html as H


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    return make_results()


@pytest.fixture(scope="module")
def page(results) -> str:
    return H.render_html(results, {name: PNG_MAGIC + name.encode() for name in AG.figure_names()})


def table_rows(page: str) -> list[list[str]]:
    """Every <tr> of the page as its unescaped cell texts."""
    return [
        [html.unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, flags=re.S)]
        for tr in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)
    ]


def section(page: str, name: str) -> str:
    start = page.index(f'<section id="s-{name}">')
    return page[start : page.index("</section>", start)]


def tables(page: str) -> list[str]:
    return re.findall(r"<table>.*?</table>", page, flags=re.S)


def find_row(page: str, *keys: str) -> list[str]:
    hits = [r for r in table_rows(page) if r[: len(keys)] == list(keys)]
    assert len(hits) == 1, (keys, hits)
    return hits[0]


def keyed_rows(table: str) -> list[dict[str, str]]:
    """The rows of one table as {header: cell}."""
    header, *rows = table_rows(table)
    return [dict(zip(header, r, strict=True)) for r in rows]


# ----------------------------------------------------------------------------- HTML


def test_html_meta_summary_at_the_top(page):
    first_section = page.index("<section")
    for text in ("abc123def4567890", "cafe0123beef4567", "2026-01-02T03:04:05+00:00"):
        assert 0 <= page.index(text) < first_section
    assert find_row(page, "gemma", "av")[2:] == ["org/gemma-av", "r1", "float32"]


def test_html_has_a_section_and_tables_for_every_aggregate(page, results):
    for name in results:
        assert f'<section id="s-{name}">' in page
    # the unknown aggregate as key / value
    assert find_row(page, "families.gemma.av_out_minus_empty") == [
        "families.gemma.av_out_minus_empty",
        "0.110 [0.050, 0.170]",
    ]


def test_html_baseline_rows(page):
    page = section(page, "fve_baseline")
    gemma = find_row(page, "gemma", "20", "0", "0.523 [0.401, 0.612]")
    assert gemma[3:6] == ["0.523 [0.401, 0.612]", "0.623 [0.501, 0.712]", "0.250 [0.200, 0.300]"]
    qwen = find_row(page, "qwen", "0", "20")
    assert qwen[3:5] == ["—", "—"]


def test_html_quote_ablation_rows(page):
    sec = section(page, "quote_ablation")
    # one row per family x condition, greedy first; fve_train with fve_own beside it
    header, *rows = table_rows(tables(sec)[0])
    assert header[:6] == ["family", "condition", "n", "tag failures", "fve_train", "fve_own"]
    assert header[-2:] == ["Δfve_train vs greedy", "Δfve_own vs greedy"]
    assert [r[:2] for r in rows] == [
        [f, c] for f in ("gemma", "qwen") for c in ("greedy", "ban_dq", "ban_dq_sq")
    ]
    assert rows[0][4:6] == ["0.600 [0.500, 0.700]", "0.500 [0.400, 0.600]"]
    assert rows[0][-2:] == ["—", "—"]
    assert rows[1][-2:] == ["-0.090 [-0.190, 0.010]", "-0.100 [-0.200, 0.000]"]
    assert rows[2][4:6] == ["—", "—"]
    assert rows[4][5] == "0.550 [—, —]"
    sub = find_row(tables(sec)[1], "gemma", "ban_dq_sq")
    assert sub[2:] == ["12", "0", "0.250 [0.100, 0.400]", "0.050 [0.000, 0.150]", "corner: 1"]
    (free,) = [
        r
        for r in keyed_rows(tables(sec)[2])
        if (r["family"], r["subset"]) == ("gemma", "hatch-free")
    ]
    assert (free["fve_train"], free["fve_own"]) == ("0.410 [0.360, 0.460]", "0.310 [0.260, 0.360]")


SECTIONS_WITH_TRAIN = {
    # section: (index of its fidelity table, Δ against what, a (family, key) row)
    "quote_ablation": (0, "greedy", ("gemma", "ban_dq")),
    "redaction": (0, "full", ("gemma", "prose_only")),
    "best_of_n": (0, "greedy", ("gemma", "best of 1")),
}


@pytest.mark.parametrize("name", SECTIONS_WITH_TRAIN)
def test_html_fve_train_column_iff_a_train_var_is_set(results, name):
    i, against, key = SECTIONS_WITH_TRAIN[name]
    with_train = H.render_html(results, {})
    header = table_rows(tables(section(with_train, name))[i])[0]
    assert header.index("fve_train") + 1 == header.index("fve_own")
    assert header[-2:] == [f"Δfve_train vs {against}", f"Δfve_own vs {against}"]
    row = next(
        r
        for r in keyed_rows(tables(section(with_train, name))[i])
        if key == (r["family"], r[header[1]])
    )
    # the fixture's fve_train is fve_own + 0.1, its Δfve_train the Δfve_own + 0.01
    assert float(row["fve_train"].split()[0]) == pytest.approx(
        float(row["fve_own"].split()[0]) + 0.1
    )
    assert float(row[f"Δfve_train vs {against}"].split()[0]) == pytest.approx(
        float(row[f"Δfve_own vs {against}"].split()[0]) + 0.01
    )
    alone = H.render_html(without_train(results), {})
    header = table_rows(tables(section(alone, name))[i])[0]
    assert "fve_train" not in header and f"Δfve_train vs {against}" not in header
    assert "fve_own" in header and header[-1] == f"Δfve_own vs {against}"


def test_html_other_experiment_rows(page):
    sec = section(page, "verbatim")
    assert find_row(sec, "gemma", "ban_dq_sq (hatch-free)")[3] == "1.000 [2.000, 4.000]"
    assert find_row(sec, "gemma", "greedy")[2:4] == ["20", "3.000 [2.000, 4.000]"]
    assert find_row(sec, "gemma", "greedy")[-1] == "—"
    sec = section(page, "redaction")
    assert find_row(sec, "qwen", "prose_only")[4:6] == ["—", "—"]
    assert find_row(sec, "gemma", "spans_redacted")[5] == "0.350 [0.250, 0.450]"
    assert find_row(sec, "gemma", "quoted spans (redacted)")[2:] == [
        "1.500 [1.000, 2.000]",
        "0.200 [0.100, 0.300]",
        "0.700 [0.500, 0.900]",
    ]
    assert find_row(sec, "gemma", "hatches (kept)")[2:] == [
        "0.250 [0.100, 0.400]",
        "0.040 [0.010, 0.070]",
        "0.150 [0.050, 0.250]",
    ]
    assert "Quoted spans (double, single, corner) are what the variants edit" in sec
    assert "hatches (italic, paren, emdash) are left as they are" in sec
    sec = section(page, "best_of_n")
    assert [r[1] for r in table_rows(tables(sec)[0]) if r[0] == "gemma"] == [
        "greedy",
        "best of 1",
        "best of 2",
        "best of 10",
        "mean over samples",
    ]
    assert find_row(sec, "gemma", "best of 2")[5] == "0.450 [0.350, 0.550]"
    assert find_row(sec, "gemma", "best of 10")[4:6] == ["—", "—"]
    (layer_k, adj) = [r for r in keyed_rows(section(page, "layers")) if r["family"] == "gemma"][:2]
    assert layer_k["input layer (through the layer-K NLA)"] == "2 (own)"
    assert layer_k["fve_own (own gold)"] == layer_k["fve_own vs v_K"] == "0.500 [0.450, 0.550]"
    assert layer_k["cos to layer K"] == "—"
    assert adj["input layer (through the layer-K NLA)"] == "1"
    assert adj["fve_own (own gold)"] == "0.200 [0.100, 0.300]"
    assert adj["Var own"] == "0.500"
    assert adj["fve_own vs v_K"] == "0.150 [0.050, 0.250]"
    assert adj["nmse vs v_K"] == "0.250 [0.200, 0.300]"
    assert adj["cos to layer K"] == "0.900 [0.880, 0.920]"
    assert adj["inter-layer nmse"] == "0.200 [0.180, 0.220]"
    assert (adj["intrinsic nmse"], adj["additive bound nmse"]) == ("0.250", "0.450")
    assert adj["Δfve_own vs greedy (vs v_K)"] == "-0.300 [-0.400, -0.200]"
    sec = section(page, "transfer_matrix")
    assert find_row(sec, "gemma", "0.700 [0.650, 0.750] (null 0.010)")
    assert find_row(sec, "qwen", "— (null —)")
    assert "mean absolute error 0.250 characters over 40 rows" in sec
    sec = section(page, "ridge_scaling")
    assert find_row(sec, "gemma → qwen", "linear", "0.300") == [
        "gemma → qwen",
        "linear",
        "0.300",
        "0.100",
        "-0.100",
        "12345.600",
        "extrapolated",
    ]
    assert find_row(sec, "gemma → qwen", "rbf", "100")[6] == "—"


def test_html_one_inline_image_per_figure_and_nothing_external(page):
    assert page.count(IMG) == len(AG.figure_names())
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, flags=re.I)
    assert "<link" not in page and "<script" not in page.lower()


def test_html_absent_aggregate_still_shows_its_figure():
    res = make_results(without=("ridge_scaling",))
    page = H.render_html(res, {n: PNG_MAGIC for n in AG.figure_names()})
    assert page.count(IMG) == len(AG.figure_names())
    assert "ridge_scaling.json is not among the report inputs" in page


def test_html_escapes_data_strings():
    res = make_results()
    evil = "<script>alert(1)</script>"
    fams = res["fve_baseline"]["data"]["families"]
    fams[evil] = fams.pop("gemma")
    res["fve_baseline"]["meta"]["git_sha"] = '"><img src=x onerror=alert(2)>'
    page = H.render_html(res, {})
    assert "<script" not in page.lower() and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert find_row(page, evil)[3] == "0.523 [0.401, 0.612]"


# ----------------------------------------------------------------------------- published figures

PUB_HEADERS = ["figure", "this run [95% CI]", "published", "source", "verdict"]
PUB_SECTIONS = E1_E8


def pub_table(sec: str) -> list[list[str]]:
    start = sec.index("<h3>This run vs published</h3>")
    return table_rows(tables(sec[start:])[0])


def test_html_published_column_with_the_papers_ids():
    page = H.render_html(paper_results(), {})
    first_section = page.index("<section")
    assert re.search(r"Published figures \(paper-2026-06\): <b>\d+ of 110</b> within", page)
    assert page.index("Published figures (paper-2026-06)") < first_section
    for name in PUB_SECTIONS:
        sec = section(page, name)
        assert pub_table(sec)[0] == PUB_HEADERS, name
        assert len(pub_table(sec)) > 1, name
    assert "This run vs published" not in section(page, "diagnostics")
    sec = section(page, "fve_baseline")
    assert find_row(sec, "gemma fve_train (train denominator)") == [
        "gemma fve_train (train denominator)",
        "0.7800 [0.7600, 0.7900]",
        "0.775",
        "seeds/000 §Protocol table; seeds/001 §1",
        "within",
    ]
    assert find_row(sec, "gemma fve_own (eval-set denominator)")[1:] == [
        "0.7000 [0.6500, 0.7500]",
        "0.774",
        "seeds/000 §Protocol table",
        "outside (run below)",
    ]
    # a count equal to the published one; a plain number above it; a null figure
    assert find_row(sec, "gemma explanation-tag failures (of 1000)")[1:3] == ["0", "0"]
    assert find_row(sec, "gemma explanation-tag failures (of 1000)")[4] == (
        "no interval (run = published)"
    )
    assert find_row(sec, "gemma nmse median")[1:3] == ["0.24000", "0.0111"]
    assert find_row(sec, "gemma nmse median")[4] == "no interval (run above)"
    assert find_row(sec, "qwen fve_own (eval-set denominator)")[1:] == [
        "—",
        "0.752",
        "seeds/000 §Cross-family transfer table (within: AV_qwen → AR_qwen); seeds/001 §1",
        "no data (data.families.qwen.fve_own has no value)",
    ]
    # the mapping decisions are shown under the table
    assert "seeds/000 is followed: fve_own." in html.unescape(sec)
    sec = section(page, "transfer_matrix")
    assert find_row(sec, "within: AV gemma → AR gemma, fve_own")[1:] == [
        "0.7000 [0.6500, 0.7500]",
        "0.774",
        "seeds/000 §Cross-family transfer table",
        "outside (run below)",
    ]
    assert find_row(sec, "within: AV gemma → AR gemma, shuffled-pair null")[1:3] == [
        "0.010",
        "-0.76",
    ]
    # the hand-made layers result has adjacent layers 1 and 3, not the paper's 40 and 42
    sec = section(page, "layers")
    assert find_row(sec, "L40: cos to L41")[4] == (
        "no data (no '40' in data.families.gemma.adjacent)"
    )


def small_published() -> P.Published:
    def fig(id_, agg, path, value, decimals):
        return {
            "id": id_,
            "aggregate": agg,
            "path": path,
            "value": value,
            "decimals": decimals,
            "label": f"label {id_}",
            "source": "seeds/000 §test",
        }

    pub = P.load_published()
    return P.parse_published(
        {
            "version": "test-1",
            "checkpoints": {
                fam: {"layer": c["layer"], **{r: c[r] for r in P.ROLES}}
                for fam, c in pub.checkpoints.items()
            },
            "figures": [
                fig("a", "fve_baseline", ["families", "{gemma}", "fve_train"], 0.775, 3),
                fig("b", "fve_baseline", ["families", "{gemma}", "fve_own"], 0.774, 3),
                fig("c", "fve_baseline", ["families", "{gemma}", "var_own"], 0.5, 1),
                fig("d", "fve_baseline", ["families", "{qwen}", "fve_own"], 0.752, 3),
                fig("e", "redaction", ["families", "{gemma}", "spans", "mean_spans_per_decode"],
                    1.4, 1),
                fig("f", "layers", ["families", "{gemma}", "greedy", "fve_own"], 0.5, 2),
            ],
        },
        "small.yaml",
    )  # fmt: skip


def test_html_published_summary_counts_by_hand():
    # a within, b below, c equal (plain), d no data, e within (1.5 [1.0, 2.0]), f within
    # (0.5 [0.45, 0.55]); the family keys of the run are not the paper's names
    res = paper_results()
    for r in res.values():
        r["meta"]["checkpoints"] = paper_checkpoints(P.load_published(), ("G", "Q"))
    for name in ("fve_baseline", "redaction", "layers"):
        data = res[name]["data"]
        data["families"] = {{"gemma": "G", "qwen": "Q"}[k]: v for k, v in data["families"].items()}
    page = H.render_html(res, {}, small_published())
    assert (
        "Published figures (test-1): <b>3 of 6</b> within this run's interval; 1 outside, "
        "1 without an interval in this run, 1 without data."
    ) in page
    assert [r[4] for r in pub_table(section(page, "fve_baseline"))[1:]] == [
        "within",
        "outside (run below)",
        "no interval (run = published)",
        "no data (data.families.Q.fve_own has no value)",
    ]
    assert pub_table(section(page, "redaction"))[1] == [
        "label e",
        "1.50 [1.00, 2.00]",
        "1.4",
        "seeds/000 §test",
        "within",
    ]
    # sections without a published figure have no table
    for name in ("quote_ablation", "transfer_matrix", "ridge_scaling"):
        assert "This run vs published" not in section(page, name)


@pytest.mark.parametrize("which", ["all", "one"])
def test_html_no_published_column_with_other_ids(which):
    res = paper_results()
    for name, r in res.items():
        if which == "all" or name == "layers":
            r["meta"]["checkpoints"]["gemma"]["ar"]["id"] = "org/gemma-ar"
    page = H.render_html(res, {})
    assert "This run vs published" not in page and "this run [" not in page
    note = re.findall(r'<p class="note">No published column: .*?</p>', page)
    assert len(note) == 1 and page.index(note[0]) < page.index("<section")
    text = html.unescape(note[0])
    assert "the published figures (paper-2026-06) apply only to the paper's checkpoints" in text
    assert "gemma: google/gemma-3-27b-it, kitft/nla-gemma3-27b-L41-av" in text
    # the first results file (by name) whose ids differ is named
    first = "best_of_n" if which == "all" else "layers"
    assert f"this run's differ ({first}.json: family 'gemma' has base/av/ar ids" in text


def test_html_hand_made_results_with_other_ids_have_no_published_column(page):
    assert "This run vs published" not in page
    assert "No published column" in page
