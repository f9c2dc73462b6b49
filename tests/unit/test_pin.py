"""Pinning hub revisions: which entries float, the refusal, `nlaprobe pin` (text edits that keep
the file's comments, resolution from an offline hub cache), and the coercion of `--config`
strings that the Snakefile relies on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from nlaprobe.cli import main
from nlaprobe.config import (
    coerce_cli_values,
    floating_revisions,
    hub_entries,
    read_config_file,
    require_pinned,
    validate_config,
    workflow_config,
)
from nlaprobe.errors import ConfigError
from nlaprobe.pin import pin_config, pin_text, resolve_commit

SHA_A = "a" * 40
SHA_B = "b" * 40
REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "config" / "paper.yaml"
DEFAULT = REPO / "config" / "config.yaml"


def paper() -> dict:
    return validate_config(read_config_file(PAPER), source="paper.yaml")


def test_hub_entries_of_the_paper_config():
    entries = hub_entries(paper())
    keys = {key: (repo, kind) for key, repo, kind, _rev in entries}
    assert keys == {
        "families.gemma.base.revision": ("google/gemma-3-27b-it", "model"),
        "families.gemma.av.revision": ("kitft/nla-gemma3-27b-L41-av", "model"),
        "families.gemma.ar.revision": ("kitft/nla-gemma3-27b-L41-ar", "model"),
        "families.qwen.base.revision": ("Qwen/Qwen2.5-7B-Instruct", "model"),
        "families.qwen.av.revision": ("kitft/nla-qwen2.5-7b-L20-av", "model"),
        "families.qwen.ar.revision": ("kitft/nla-qwen2.5-7b-L20-ar", "model"),
        "corpus.revision": ("openbmb/Ultra-FineWeb", "dataset"),
    }
    assert len(floating_revisions(paper())) == 7


def test_embedded_default_has_no_hub_entry():
    cfg = validate_config(read_config_file(DEFAULT))
    assert hub_entries(cfg) == []
    require_pinned(cfg, source="config.yaml", configfile=None)  # nothing to refuse


def test_floating_revision_refused_with_pinning_instructions():
    with pytest.raises(ConfigError) as e:
        require_pinned(paper(), source="paper.yaml", configfile="config/paper.yaml")
    msg = str(e.value)
    assert "key 'families.gemma.av.revision': revision 'main' of kitft/nla-gemma3-27b-L41-av" in msg
    assert "key 'corpus.revision'" in msg
    assert "nlaprobe pin config/paper.yaml --out config/paper.pinned.yaml" in msg
    assert "run.allow_floating_revisions: true" in msg


def test_allow_floating_revisions_accepts_them():
    cfg = paper()
    cfg["run"]["allow_floating_revisions"] = True
    require_pinned(cfg, source="paper.yaml", configfile="config/paper.yaml")


def test_a_local_corpus_folder_is_not_a_hub_entry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mydata").mkdir()
    cfg = paper()
    cfg["corpus"]["dataset"] = "mydata"
    assert "corpus.revision" not in {k for k, *_ in hub_entries(cfg)}


# ----------------------------------------------------------------------------- pin_text

TEXT = """\
# a comment that must stay
corpus:
  dataset: org/data   # the corpus
  revision: main
families:
  a:
    av:
      id: org/av
      revision: v1.0  # a tag
    ar: {id: org/ar}
    base:
      id: org/base
      dtype: float32
"""


def test_pin_text_keeps_comments_and_layout():
    pins = {
        "corpus.revision": ("main", SHA_A),
        "families.a.av.revision": ("v1.0", SHA_B),
        "families.a.ar.revision": ("main", SHA_A),
        "families.a.base.revision": ("main", SHA_B),
    }
    out = pin_text(TEXT, pins, source="t.yaml")
    today = dt.date.today().isoformat()
    assert out.splitlines() == [
        "# a comment that must stay",
        "corpus:",
        "  dataset: org/data   # the corpus",
        f"  revision: \"{SHA_A}\"  # pinned from 'main' on {today}",
        "families:",
        "  a:",
        "    av:",
        "      id: org/av",
        f'      revision: "{SHA_B}"  # a tag',
        f'    ar: {{id: org/ar, revision: "{SHA_A}"}}',
        "    base:",
        "      id: org/base",
        f"      revision: \"{SHA_B}\"  # pinned from 'main' on {today}",
        "      dtype: float32",
    ]
    parsed = yaml.safe_load(out)
    assert parsed["families"]["a"]["ar"] == {"id": "org/ar", "revision": SHA_A}


def test_pin_text_names_a_missing_section():
    with pytest.raises(ConfigError, match="key 'families.b.av.revision': section 'b' not found"):
        pin_text(TEXT, {"families.b.av.revision": ("main", SHA_A)}, source="t.yaml")


# ----------------------------------------------------------------------------- pin_config


@pytest.fixture
def paper_cache(offline_hub, tmp_path):
    """Every hub repo of config/paper.yaml in an offline cache (refs/main -> a commit each)."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "config.json").write_text("{}")
    commits = {}
    for i, (_key, repo, kind, _rev) in enumerate(hub_entries(paper())):
        commits[repo] = f"{i:x}" * 40
        offline_hub(repo, files, commits[repo], repo_type=kind)
    return commits


def test_pin_config_resolves_every_revision_offline(paper_cache, tmp_path):
    out = tmp_path / "paper.pinned.yaml"
    report = pin_config(PAPER, out)
    assert {v["repo"]: v["sha"] for v in report.values()} == paper_cache
    pinned = validate_config(read_config_file(out))
    assert floating_revisions(pinned) == []
    assert (
        pinned["families"]["gemma"]["av"]["revision"] == paper_cache["kitft/nla-gemma3-27b-L41-av"]
    )
    assert pinned["corpus"]["revision"] == paper_cache["openbmb/Ultra-FineWeb"]
    # the rest of the file is unchanged, comments included
    orig, new = PAPER.read_text().splitlines(), out.read_text().splitlines()
    assert len(orig) == len(new)
    changed = [(a, b) for a, b in zip(orig, new, strict=True) if a != b]
    assert len(changed) == 7 and all("revision: main" in a for a, _ in changed)
    # pinning a pinned file changes nothing
    again = tmp_path / "again.yaml"
    assert pin_config(out, again) == {}
    assert again.read_text() == out.read_text()


def test_pin_cli_and_missing_repo(paper_cache, tmp_path, caplog):
    out = tmp_path / "p.yaml"
    assert main(["pin", str(PAPER), "--out", str(out)]) == 0
    assert out.exists()
    raw = read_config_file(PAPER)
    raw["families"]["qwen"]["av"]["id"] = "kitft/not-in-cache"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    bad_out = tmp_path / "bad.pinned.yaml"
    assert main(["pin", str(bad), "--out", str(bad_out)]) == 2
    err = caplog.text
    assert "key 'families.qwen.av.revision'" in err and "kitft/not-in-cache" in err
    assert not bad_out.exists()


def test_resolve_commit_keeps_a_sha_and_checks_the_result(monkeypatch):
    assert resolve_commit("org/x", "model", SHA_A) == SHA_A
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: "/c/snapshots/zz")
    with pytest.raises(ConfigError, match="not a 40-hex commit sha"):
        resolve_commit("org/x", "model", "main")


# ----------------------------------------------------------------------------- --config


def test_coerce_cli_strings_where_the_schema_wants_numbers():
    # what Snakemake's parser makes of --config "decode={batch_size: 4}" and friends
    cli = {
        "decode": {"batch_size": "4", "temperature": "0.5", "backend": "hf"},
        "corpus": {"splits": {"eval": {"start": "100000", "stop": "100008"}}, "streaming": "true"},
        "ridge": {"alphas": ["0.1", "1"], "kernels": ["linear"]},
        "run": {"primary_family": "null", "seed": "not-a-number"},
        "families": {"q": {"av": {"path": "1234"}, "train_var": "0.5", "layer": "3"}},
    }
    out = coerce_cli_values(cli)
    assert out["decode"] == {"batch_size": 4, "temperature": 0.5, "backend": "hf"}
    assert out["corpus"] == {
        "splits": {"eval": {"start": 100000, "stop": 100008}},
        "streaming": True,
    }
    assert out["ridge"] == {"alphas": [0.1, 1], "kernels": ["linear"]}
    # a value that does not parse as the wanted type stays a string, for validation to report
    assert out["run"] == {"primary_family": None, "seed": "not-a-number"}
    # strings stay strings where the schema wants one (a path that looks like a number)
    assert out["families"] == {"q": {"av": {"path": "1234"}, "train_var": 0.5, "layer": 3}}


def test_workflow_config_tells_configfile_from_config(tmp_path):
    # --config naming `families` refines the default instead of replacing it
    cli = {"families": {"qwen": {"ar": {"path": "/x/ar", "dtype": "float32"}}}}
    cfg = workflow_config(DEFAULT, [], cli)
    assert cfg["families"]["qwen"]["ar"] == {
        "path": "/x/ar",
        "dtype": "float32",
        "revision": "main",
        "trust_remote_code": False,
        "params_b": None,
    }
    assert cfg["families"]["gemma"]["av"]["demo"] == "gemma"
    assert cfg["corpus"]["source"] == "builtin"
    # docs/configs.md's own example
    assert (
        workflow_config(DEFAULT, [], {"decode": {"batch_size": "4"}})["decode"]["batch_size"] == 4
    )
    # a --configfile replaces the default; floating revisions are refused there
    with pytest.raises(ConfigError, match="nlaprobe pin"):
        workflow_config(DEFAULT, [PAPER], {})
    cfg = workflow_config(DEFAULT, [PAPER], {"run": {"allow_floating_revisions": "true"}})
    assert cfg["corpus"]["dataset"] == "openbmb/Ultra-FineWeb"
    assert cfg["corpus"]["text_field"] == "content"


def test_validate_config_warns_of_floating_revisions(caplog):
    assert main(["validate-config", str(PAPER)]) == 0
    assert "7 floating hub revision(s)" in caplog.text
    assert "families.qwen.ar.revision" in caplog.text and "nlaprobe pin" in caplog.text
    caplog.clear()
    assert main(["validate-config", str(DEFAULT)]) == 0
    assert "floating" not in caplog.text
