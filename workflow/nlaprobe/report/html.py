"""The report page: results objects and figure PNGs -> one self-contained HTML page.

inputs -> outputs: {aggregate name: results object}, {figure name: PNG bytes} and the published
figures (nlaprobe.published) -> the page's text (CSS inline, figures inline as base64 PNG, no
external resource).

What the page shows of an aggregate (its heading, its section's HTML, its figures and their
captions, the order of sections) is declared by its module in nlaprobe.aggregates; its section
renderer is `section_<aggregate name>` here. The parts of the page that belong to no
aggregate: the published-figures summary and the provenance table at the top, the key/value
table of an input that is not a registered aggregate, and the "Other figures" section
(`s-other-figures`) for figures that no registered aggregate draws.

Invariants:
- every aggregate among the inputs gets its tables: a registered one in the layout its module
  names (section order: the registry's), any other one as a flat key/value table after them,
  so nothing is dropped; a figure of an absent aggregate gets a short section of its own;
- every table cell is formatted by nlaprobe.report.format, and every string that comes from
  the data (family names, conditions, meta values) is HTML-escaped;
- E2, E4 and E5 show fve_train, with fve_own beside it, and both paired differences, when any
  of their fidelity entries has a training Var (`var_train`); fve_own alone otherwise;
- published figures: when every input's checkpoint ids are the paper's, a line at the top
  counts the published figures within the run's intervals and each section ends with a
  "This run vs published" table of its figures; otherwise one line says the comparison
  applies only to the paper's checkpoints, and no section has the table;
- deterministic: the page depends only on its arguments (it shows each input's `meta`).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from nlaprobe import aggregates as AG
from nlaprobe import published as P
from nlaprobe.report.data import (
    CONDITION_ORDER,
    KERNEL_ORDER,
    as_dict,
    best_of_n_entries,
    fve_metrics,
    get,
    has_train,
    is_interval,
    numeric_order,
    ordered,
)
from nlaprobe.report.format import (
    NO_DATA,
    ci_level,
    fmt,
    pub_number,
    pub_run,
    pub_verdict,
)

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; }
td.key, th.key { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption, .note { color: #555; font-size: 0.9em; }
.warn { color: #a40; }
.published { font-size: 0.95em; }
code { font-size: 0.95em; }
"""

FIDELITY_COLUMNS = (
    ("n", "n"),
    ("tag_failures", "tag failures"),
    ("fve_own", "fve_own"),
    ("fve_train", "fve_train"),
    ("nmse_mean", "nmse mean"),
    ("nmse_median", "nmse median"),
    ("cos_mean", "cos mean"),
    ("var_own", "Var own"),
    ("frac_fve_neg", "share fve<0"),
    ("frac_fve_gt_half", "share fve>0.5"),
    ("fve_own_strict", "fve_own strict"),
)
BASELINE_EXTRA = (
    ("var_train", "Var train"),
    ("fve_train_strict", "fve_train strict"),
    ("nmse_mean_strict", "nmse mean strict"),
    ("n_rows", "rows"),
    ("decode_errors", "decode errors"),
)


def _fid_columns(train: bool) -> tuple[tuple[str, str], ...]:
    """FIDELITY_COLUMNS for the E2, E4 and E5 tables (see `fve_metrics`): fve_train, then fve_own
    beside it, when a training Var is configured; no fve_train column otherwise."""
    own = [c for c in FIDELITY_COLUMNS if c[0] != "fve_train"]
    if not train:
        return tuple(own)
    i = [k for k, _ in own].index("fve_own")
    return (*own[:i], ("fve_train", "fve_train"), *own[i:])


def _diff_heads(against: str, train: bool) -> list[str]:
    """Headers of the paired-difference columns: Δfve_train (when configured) and Δfve_own."""
    return [f"Δ{m} vs {against}" for m in fve_metrics(train)]


def _diff_cells(diff: Any, train: bool) -> list[Any]:
    """A paired difference of experiments.paired_fve_diff as its cells: its "train" entry
    (Δfve_train, when configured), then itself (Δfve_own)."""
    return ([get(diff, "train")] if train else []) + [diff]


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _anchor(name: str) -> str:
    return "s-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


_KEY = ' class="key"'


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], n_keys: int = 1) -> str:
    """An HTML table; the first `n_keys` columns are left-aligned keys; every cell is `fmt`ed
    and escaped."""
    if not rows:
        return f'<p class="note">{NO_DATA}</p>'
    head = "".join(f"<th{_KEY if i < n_keys else ''}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f"<td{_KEY if i < n_keys else ''}>{_e(fmt(c))}</td>" for i, c in enumerate(r))
        + "</tr>\n"
        for r in rows
    )
    return f'<div class="scroll"><table>\n<tr>{head}</tr>\n{body}</table></div>'


def _fid(entry: Any, columns: Sequence[tuple[str, str]] = FIDELITY_COLUMNS) -> list[Any]:
    return [get(entry, k) for k, _ in columns]


def _heads(columns: Sequence[tuple[str, str]] = FIDELITY_COLUMNS) -> list[str]:
    return [h for _, h in columns]


def _h3(text: str) -> str:
    return f"<h3>{_e(text)}</h3>"


def section_fve_baseline(data: dict) -> str:
    cols = FIDELITY_COLUMNS + BASELINE_EXTRA
    rows = [[fam, *_fid(e, cols)] for fam, e in as_dict(data.get("families")).items()]
    return _table(["family", *_heads(cols)], rows)


def section_quote_ablation(data: dict) -> str:
    families = as_dict(data.get("families"))
    train = has_train(
        e for fe in families.values() for e in as_dict(get(fe, "conditions")).values()
    )
    cols = _fid_columns(train)
    fid, sub, subsets = [], [], []
    for fam, fe in families.items():
        conds = as_dict(get(fe, "conditions"))
        for cond in ordered(list(conds), CONDITION_ORDER):
            e = conds[cond]
            fid.append([fam, cond, *_fid(e, cols), *_diff_cells(get(e, "diff_vs_greedy"), train)])
            sub.append(
                [
                    fam,
                    cond,
                    get(e, "n_banned_tokens"),
                    get(e, "leaks"),
                    get(e, "share_single_quotes"),
                    get(e, "share_hatch"),
                    get(e, "hatch_kinds"),
                ]
            )
            for key, name in (("hatch_free", "hatch-free"), ("hatch_using", "hatch-using")):
                if get(e, key) is not None:
                    subsets.append([fam, cond, name, *_fid(e[key], cols)])
    parts = [
        _h3("Fidelity per condition"),
        _table(["family", "condition", *_heads(cols), *_diff_heads("greedy", train)], fid, 2),
        _h3("Quote substitution"),
        _table(
            [
                "family",
                "condition",
                "banned tokens",
                "leaks",
                "share single quotes",
                "share escape hatch",
                "hatch kinds",
            ],
            sub,
            2,
        ),
    ]
    if subsets:
        parts += [
            _h3("Hatch-free and hatch-using subsets"),
            _table(["family", "condition", "subset", *_heads(cols)], subsets, 3),
        ]
    return "\n".join(parts)


def section_verbatim(data: dict) -> str:
    t = data.get("threshold")
    rows = []
    for fam, sets in as_dict(data.get("families")).items():
        for cond in ordered(list(as_dict(sets)), CONDITION_ORDER):
            e = sets[cond]
            subsets = [(cond, e)]
            if get(e, "hatch_free") is not None:
                subsets.append((f"{cond} (hatch-free)", e["hatch_free"]))
            for name, s in subsets:
                rows.append(
                    [
                        fam,
                        name,
                        get(s, "runs", "n"),
                        get(s, "median"),
                        get(s, "p90"),
                        get(s, "share_ge"),
                        get(s, "runs", "max"),
                        get(s, "null", "median"),
                        get(s, "null", "p90"),
                        get(s, "null_share_ge"),
                        get(s, "diff_share_ge_vs_null"),
                        get(s, "diff_share_ge_vs_greedy"),
                    ]
                )
    ge = f"≥ {fmt(t)}"
    note = (
        f'<p class="note">Longest run of words shared by explanation and source context; '
        f"null: each explanation paired with another row's context (seed "
        f"{_e(fmt(data.get('null_seed')))}).</p>"
    )
    headers = [
        "family",
        "decode set",
        "n",
        "median run",
        "p90 run",
        f"share {ge}",
        "max run",
        "null median",
        "null p90",
        f"null share {ge}",
        "Δshare vs null",
        "Δshare vs greedy",
    ]
    return note + _table(headers, rows, 2)


def section_redaction(data: dict) -> str:
    order = [v for v in data.get("variants") or [] if isinstance(v, str)]
    families = as_dict(data.get("families"))
    train = has_train(e for fe in families.values() for e in as_dict(get(fe, "variants")).values())
    cols = _fid_columns(train)
    var_rows, span_rows = [], []
    for fam, fe in families.items():
        variants = as_dict(get(fe, "variants"))
        for v in ordered(list(variants), order):
            e = variants[v]
            var_rows.append([fam, v, *_fid(e, cols), *_diff_cells(get(e, "diff_vs_full"), train)])
        sp = get(fe, "spans")
        span_rows += [
            [
                fam,
                label,
                get(sp, f"mean_{what}_per_decode"),
                get(sp, f"share_chars_in_{what}"),
                get(sp, f"share_decodes_with_{what}"),
            ]
            for what, label in (("spans", "quoted spans (redacted)"), ("hatches", "hatches (kept)"))
        ]
    return "\n".join(
        [
            _h3("Fidelity per variant"),
            _table(["family", "variant", *_heads(cols), *_diff_heads("full", train)], var_rows, 2),
            _h3("Quoted spans and unquoted hatches in the greedy explanations"),
            f'<p class="note">Quoted spans ({_e(fmt(data.get("span_kinds")))}) are what the '
            f"variants edit; hatches ({_e(fmt(data.get('hatch_kinds')))}) are left as they are "
            "and counted apart.</p>",
            _table(
                ["family", "kind", "per decode", "share of characters", "share of decodes"],
                span_rows,
                2,
            ),
        ]
    )


def section_best_of_n(data: dict) -> str:
    families = as_dict(data.get("families"))
    train = has_train(best_of_n_entries(families))
    cols = _fid_columns(train)
    none = _diff_cells(None, train)
    rows, info = [], []
    for fam, fe in families.items():
        rows.append([fam, "greedy", *_fid(get(fe, "greedy"), cols), *none])
        best = as_dict(get(fe, "best_of"))
        for n in numeric_order(list(best)):
            diff = _diff_cells(get(best[n], "diff_vs_greedy"), train)
            rows.append([fam, f"best of {n}", *_fid(best[n], cols), *diff])
        rows.append([fam, "mean over samples", *_fid(get(fe, "mean_over_samples"), cols), *none])
        info.append([fam, get(fe, "n_samples"), get(fe, "sample_tag_failures")])
    return "\n".join(
        [
            _table(["family", "selection", *_heads(cols), *_diff_heads("greedy", train)], rows, 2),
            _h3("Samples"),
            _table(["family", "samples per row", "sample tag failures"], info),
        ]
    )


def section_layers(data: dict) -> str:
    """One row per input layer: the layer-K greedy row, then each adjacent layer k with its
    headline (the round trip of v_k scored against v_k itself, Var of the v_k set), its scores
    against v_K beside it, the geometry between the layers and the paired difference."""
    own = (
        ("n", "n"),
        ("tag_failures", "tag failures"),
        ("fve_own", "fve_own (own gold)"),
        ("nmse_mean", "nmse mean"),
        ("cos_mean", "cos mean"),
        ("var_own", "Var own"),
    )
    rows = []
    for fam, fe in as_dict(data.get("families")).items():
        k = get(fe, "layer")
        g = get(fe, "greedy")
        rows.append(
            [fam, f"{fmt(k)} (own)", *_fid(g, own), None, get(g, "fve_own")]
            + [get(g, "nmse_mean")]
            + [None] * 4
        )
        adj = as_dict(get(fe, "adjacent"))
        for layer in numeric_order(list(adj)):
            e = adj[layer]
            rows.append(
                [
                    fam,
                    layer,
                    *_fid(e, own),
                    get(e, "cos_to_layer"),
                    get(e, "vs_layer_K", "fve_own"),
                    get(e, "vs_layer_K", "nmse_mean"),
                    get(e, "inter_layer_nmse"),
                    get(e, "intrinsic_nmse"),
                    get(e, "additive_bound_nmse"),
                    get(e, "diff_vs_greedy"),
                ]
            )
    headers = [
        "family",
        "input layer (through the layer-K NLA)",
        *_heads(own),
        "cos to layer K",
        "fve_own vs v_K",
        "nmse vs v_K",
        "inter-layer nmse",
        "intrinsic nmse",
        "additive bound nmse",
        "Δfve_own vs greedy (vs v_K)",
    ]
    note = (
        '<p class="note">Each input layer is scored against its own vector with the Var of its '
        "own vector set (fve_own (own gold)); the columns vs v_K score the same predictions "
        "against the layer-K vector.</p>"
    )
    return note + _table(headers, rows, 2)


def section_transfer_matrix(data: dict) -> str:
    cells = as_dict(data.get("cells"))
    fams = [f for f in data.get("families") or [] if isinstance(f, str)]
    grid = []
    for av in fams:
        row: list[Any] = [av]
        for ar in fams:
            c = cells.get(f"{av}__{ar}")
            v = get(c, "fve_own") if c is not None else get(data, "matrix", av, ar)
            nv = get(c, "null_fve_own") if c is not None else get(data, "nulls", av, ar)
            row.append(f"{fmt(v)} (null {fmt(nv)})")
        grid.append(row)
    detail = [
        [
            get(c, "av"),
            get(c, "ar"),
            get(c, "route"),
            get(c, "fve_own"),
            get(c, "null_fve_own"),
            get(c, "nmse_mean"),
            get(c, "cos_mean"),
            get(c, "var_own"),
            get(c, "n"),
            get(c, "n_rows"),
            get(c, "tag_failures"),
            get(c, "fve_own_strict"),
        ]
        for c in cells.values()
    ]
    parts = [
        _h3("fve_own: AV family (rows) x AR family (columns), with the shuffled-pair null"),
        _table(["AV \\ AR", *fams], grid),
        _h3("Cells"),
        _table(
            [
                "AV",
                "AR",
                "route",
                "fve_own",
                "null fve_own",
                "nmse mean",
                "cos mean",
                "Var own",
                "n",
                "rows",
                "tag failures",
                "fve_own strict",
            ],
            detail,
            3,
        ),
    ]
    al = as_dict(data.get("alignment"))
    if al:
        parts.append(
            f'<p class="note">Cross-tokenizer alignment: mean absolute error '
            f"{_e(fmt(al.get('mean_abs_error_chars')))} characters over "
            f"{_e(fmt(al.get('n_rows')))} rows.</p>"
        )
    return "\n".join(parts)


def section_ridge_scaling(data: dict) -> str:
    cross, curve = [], []
    for key, e in as_dict(data.get("directions")).items():
        src, dst = get(e, "src"), get(e, "dst")
        name = f"{src} → {dst}" if src is not None and dst is not None else key
        kernels = as_dict(get(e, "kernels"))
        for kernel in ordered(list(kernels), KERNEL_ORDER):
            c = as_dict(get(kernels, kernel, "crossover"))
            cross.append(
                [
                    name,
                    kernel,
                    get(e, "text_route", "fve_own"),
                    c.get("slope"),
                    c.get("intercept"),
                    c.get("n_cross"),
                    c.get("status"),
                ]
            )
            points = [p for p in get(kernels, kernel, "curve") or [] if isinstance(p, dict)]
            for p in points:
                curve.append(
                    [
                        name,
                        kernel,
                        p.get("n"),
                        p.get("n_requested"),
                        p.get("alpha"),
                        p.get("gamma"),
                        p.get("fve_own"),
                        p.get("nmse_mean"),
                        p.get("cos_mean"),
                    ]
                )
    return "\n".join(
        [
            _h3("Where ridge would match the text route (log-linear fit of fve_own on log n)"),
            _table(
                [
                    "direction",
                    "kernel",
                    "text route fve_own",
                    "slope",
                    "intercept",
                    "n match",
                    "status",
                ],
                cross,
                2,
            ),
            _h3("Curve"),
            _table(
                [
                    "direction",
                    "kernel",
                    "n",
                    "n requested",
                    "alpha",
                    "gamma",
                    "fve_own",
                    "nmse mean",
                    "cos mean",
                ],
                curve,
                2,
            ),
        ]
    )


def _flatten(x: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, leaf) pairs; Intervals and lists of scalars are leaves."""
    if isinstance(x, dict) and not is_interval(x) and x:
        for k, v in x.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(x, list) and any(isinstance(v, dict | list) for v in x):
        for i, v in enumerate(x):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, x


def _generic_section(data: dict) -> str:
    return _table(["key", "value"], list(_flatten(data)))


def _published_state(
    published: P.Published, results: dict[str, dict]
) -> tuple[P.Match, list[P.Comparison]]:
    """Whether the run used the paper's checkpoints and, if so, every figure's comparison."""
    match = P.match_run(published, results)
    return match, P.compare(published, results) if match.equals_paper else []


def _html_published_summary(
    published: P.Published, match: P.Match, comparisons: Sequence[P.Comparison]
) -> str:
    """One line at the top: k of n published figures within the run's interval, or why there
    is no published column."""
    if not match.equals_paper:
        ids = "; ".join(
            f"{fam}: {', '.join(c[r] for r in P.ROLES)}" for fam, c in published.checkpoints.items()
        )
        return (
            f'<p class="note">No published column: the published figures ({_e(published.version)})'
            f" apply only to the paper's checkpoints ({_e(ids)}); this run's differ "
            f"({_e(match.reason)}).</p>"
        )
    t = P.tally(comparisons)
    return (
        f'<p class="published">Published figures ({_e(published.version)}): '
        f"<b>{t['within']} of {len(comparisons)}</b> within this run's interval; "
        f"{t['outside']} outside, {t['no interval']} without an interval in this run, "
        f"{t['no data']} without data. Each section compares them under "
        f"“This run vs published”.</p>"
    )


def _html_published(name: str, comparisons: Sequence[P.Comparison], res: Any) -> str:
    """The section's "This run vs published" table (nothing when no figure belongs to it, or
    when the run's checkpoints are not the paper's: then `comparisons` is empty)."""
    mine = [c for c in comparisons if c.figure.aggregate == name]
    if not mine:
        return ""
    rows = [
        [
            c.figure.label,
            pub_run(c),
            pub_number(c.figure.value, c.figure.decimals),
            c.figure.source,
            pub_verdict(c),
        ]
        for c in mine
    ]
    headers = ["figure", f"this run [{ci_level(res)}]", "published", "source", "verdict"]
    parts = [_h3("This run vs published"), _table(headers, rows)]
    notes = [f"<li>{_e(c.figure.label)}: {_e(c.figure.note)}</li>" for c in mine if c.figure.note]
    if notes:
        parts.append('<ul class="note">' + "".join(notes) + "</ul>")
    return "\n".join(parts)


def _section_renderer(name: str) -> Callable[[dict], str]:
    """The HTML of an aggregate's `data`: its module's `section`, else a key/value table."""
    agg = AG.REGISTRY.get(name)
    return AG.resolve(agg.section) if agg is not None and agg.section else _generic_section


def _img(name: str, png: bytes) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    caption = {f.name: f.caption for f, _ in AG.figures()}.get(name, name)
    return (
        f'<figure id="{_e(_anchor("fig-" + name))}"><img src="data:image/png;base64,{b64}" '
        f'alt="{_e(name)}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _meta_summary(results: dict[str, dict]) -> str:
    rows = []
    for name, res in results.items():
        m = as_dict(res.get("meta"))
        rows.append(
            [
                name,
                m.get("created_at"),
                m.get("git_sha"),
                m.get("config_hash"),
                m.get("package_version"),
                m.get("schema_version"),
                m.get("device"),
            ]
        )
    parts = [
        "<h2>Provenance</h2>",
        _table(
            ["results file", "created_at", "git sha", "config hash", "package", "schema", "device"],
            rows,
        ),
    ]
    for key, what in (("config_hash", "config hashes"), ("git_sha", "git commits")):
        distinct = {json.dumps(get(r, "meta", key)) for r in results.values()}
        if len(distinct) > 1:
            parts.append(
                f'<p class="warn">The inputs come from {len(distinct)} different {what}.</p>'
            )
    groups: dict[str, list[str]] = {}
    for name, res in results.items():
        ck = get(res, "meta", "checkpoints")
        if isinstance(ck, dict) and ck:
            groups.setdefault(json.dumps(ck, sort_keys=True), []).append(name)
    for blob, names in groups.items():
        title = "Checkpoints" if len(groups) == 1 else f"Checkpoints of {', '.join(names)}"
        rows = []
        for fam, roles in json.loads(blob).items():
            for role, c in as_dict(roles).items():
                c = as_dict(c)
                where = c.get("id") or c.get("path")
                if where is None and c.get("demo") is not None:
                    where = f"demo: {fmt(c['demo'])}"
                rows.append([fam, role, where, c.get("revision"), c.get("dtype")])
        parts += [
            _h3(title),
            _table(["family", "role", "id or path", "revision", "dtype"], rows, 2),
        ]
    return "\n".join(parts)


def render_html(
    results: dict[str, dict], figures: dict[str, bytes], published: P.Published | None = None
) -> str:
    """The report page: the inputs' meta at the top, then one section per aggregate present (its
    tables, and its figures) in the registry's order, unregistered aggregates after; a figure of
    an absent aggregate gets a short section of its own. Each entry of `figures` appears once.

    `published` (default: the packaged file of nlaprobe.published): when the run's checkpoint
    ids are the paper's, a line at the top counts the published figures within the run's
    intervals and each section has a "This run vs published" table; otherwise one line says
    the comparison applies only to the paper's checkpoints."""
    pub = published if published is not None else P.load_published()
    match, comparisons = _published_state(pub, results)
    registered = AG.names()
    titles = {a.name: a.heading for a in AG.aggregates()}
    order = [n for n in registered if n in results]
    order += sorted(n for n in results if n not in titles)
    sources = {f.name: agg for f, agg in AG.figures()}
    figs_of: dict[str, list[str]] = {}
    for fig_name in figures:
        figs_of.setdefault(sources.get(fig_name, ""), []).append(fig_name)
    absent = [n for n in registered if n in figs_of and n not in results]

    toc, sections = [], []
    for name in order + absent:
        title = titles.get(name, name)
        toc.append(f'<li><a href="#{_e(_anchor(name))}">{_e(title)}</a></li>')
        body = [f'<section id="{_e(_anchor(name))}"><h2>{_e(title)}</h2>']
        if name in results:
            body.append(f'<p class="note">From <code>{_e(name)}.json</code>.</p>')
            data = as_dict(results[name].get("data"))
            body.append(_section_renderer(name)(data))
            body.append(_html_published(name, comparisons, results[name]))
        else:
            body.append(f'<p class="note">{_e(name)}.json is not among the report inputs.</p>')
        body += [_img(f, figures[f]) for f in figs_of.get(name, [])]
        body.append("</section>")
        sections.append("\n".join(body))
    if figs_of.get(""):
        sections.append(
            '<section id="s-other-figures"><h2>Other figures</h2>\n'
            + "\n".join(_img(f, figures[f]) for f in figs_of[""])
            + "\n</section>"
        )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            "<title>nlaprobe report</title>",
            f"<style>{_CSS}</style>",
            "</head><body>",
            "<h1>nlaprobe report</h1>",
            _html_published_summary(pub, match, comparisons),
            _meta_summary(results),
            '<p class="note">Intervals read <code>value [lo, hi]</code>: the value on all rows '
            "and its bootstrap percentile interval over documents (level 1 − alpha, alpha in the "
            "metrics settings of the config); Δ columns are paired differences. — marks a value "
            "that is undefined or missing.</p>",
            "<ul>" + "".join(toc) + "</ul>",
            *sections,
            "</body></html>",
            "",
        ]
    )
