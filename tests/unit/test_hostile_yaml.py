"""Hostile YAML (issue 14, item 3): alias bombs, recursive aliases, deep nesting, huge integers and
lone surrogates are refused quickly with one message naming the file or the key, in a config
(`validate-config`, the Snakefile's `workflow_config`) and in a checkpoint sidecar; every value
quoted in an error message is bounded."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from nlaprobe.checkpoints import read_sidecar
from nlaprobe.cli import main
from nlaprobe.config import load_config, read_config_file, validate_config, workflow_config
from nlaprobe.errors import ConfigError, DataError, show
from nlaprobe.io import MAX_YAML_NODES, load_yaml, read_yaml

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "config" / "config.yaml"


def laughs(levels: int = 9, width: int = 9) -> str:
    """A billion-laughs document: `width ** levels` strings through nested aliases."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


HOSTILE = {
    "alias bomb": (laughs(), "through aliases"),
    "recursive alias": ("a: &a [1, *a]\n", "recursive alias"),
    "deep nesting": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    "huge integer": ("run:\n  seed: " + "7" * 5000 + "\n", "cannot be read"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_config_file_refused_quickly(tmp_path, case):
    text, needle = HOSTILE[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(text, encoding="utf-8")
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_config([path])
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert message.startswith(f"{path}: not valid YAML") and needle in message
    assert "\n" not in message and len(message) < 400


def test_alias_bomb_in_validate_config_exits_2_with_one_line(tmp_path, caplog):
    path = tmp_path / "bomb.yaml"
    path.write_text(laughs(), encoding="utf-8")
    start = time.monotonic()
    assert main(["validate-config", str(path)]) == 2
    assert time.monotonic() - start < 5
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert str(path) in record.getMessage() and "\n" not in record.getMessage()


def test_alias_bomb_in_the_snakefiles_config(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(laughs(), encoding="utf-8")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="through aliases"):
        workflow_config(DEFAULT, [path], {})
    assert time.monotonic() - start < 5


def test_modest_aliases_still_load(tmp_path):
    """Aliases are YAML: reusing a checkpoint entry or a list a few times is fine."""
    path = tmp_path / "aliases.yaml"
    path.write_text("ridge:\n  alphas: &a [0.1, 1.0]\n  rbf_gammas: *a\n", encoding="utf-8")
    cfg = load_config([DEFAULT, path])
    assert cfg["ridge"]["rbf_gammas"] == cfg["ridge"]["alphas"] == [0.1, 1.0]


def test_the_bound_counts_expanded_nodes():
    width = 10
    # 1 + width * (1 + width) nodes: just under and just over the bound
    ok = "a: &a [" + ", ".join(["x"] * (width - 1)) + "]\nb: [" + ", ".join(["*a"] * 900) + "]\n"
    assert len(load_yaml(ok)["b"]) == 900
    bomb = "a: &a [" + ", ".join(["x"] * width) + "]\nb: [" + ", ".join(["*a"] * 1000) + "]\n"
    assert 1000 * (width + 1) > MAX_YAML_NODES
    with pytest.raises(Exception, match="through aliases"):
        load_yaml(bomb)


def test_sidecar_alias_bomb_is_refused_in_bounded_memory(tmp_path):
    (tmp_path / "nla_meta.yaml").write_text(
        "kind: nla_model\nrole: av\nd_model: 64\n"
        + laughs().replace("l0:", "tokens:\n  x: 1\nl0:"),
        encoding="utf-8",
    )
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(DataError, match="through aliases"):
            read_sidecar(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 5
    assert peak < 50 * 2**20


def test_read_yaml_refuses_recursion_and_depth(tmp_path):
    for text, needle in (HOSTILE["recursive alias"], HOSTILE["deep nesting"]):
        path = tmp_path / "x.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(DataError, match=needle):
            read_yaml(path)


# ----------------------------------------------------------------------------- surrogates


def test_lone_surrogate_in_a_config_value_names_the_key(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text('corpus:\n  dataset: "py\\ud800doc"\n', encoding="utf-8")
    raw = read_config_file(path)
    assert raw["corpus"]["dataset"] == "py\ud800doc"
    with pytest.raises(ConfigError) as info:
        load_config([DEFAULT, path])
    message = str(info.value)
    assert "key 'corpus.dataset'" in message and "lone surrogate (U+D800" in message
    assert "\n" not in message
    message.encode()  # the message itself is printable


def test_lone_surrogate_in_a_key_or_from_the_command_line():
    raw = read_config_file(DEFAULT)
    raw["families"]["qwen"]["av"] = {"path": "/ckpt/\udc80av"}  # an undecodable argv byte
    with pytest.raises(ConfigError, match=r"key 'families\.qwen\.av\.path': contains a lone"):
        validate_config(raw)
    with pytest.raises(ConfigError, match=r"key 'corpus\.'\\ud800'': contains a lone"):
        workflow_config(DEFAULT, [], {"corpus": {"\ud800": 1}})


# ----------------------------------------------------------------------------- bounded messages


def test_show_is_bounded_in_time_and_length():
    shared: list = ["lol"] * 10
    for _ in range(30):  # 10**31 leaves through shared references
        shared = [shared] * 10
    start = time.monotonic()
    for value in (shared, 10**100_000, "x" * 10**7, {"k" * 500: list(range(10**5))}, "\udc80"):
        text = show(value)
        assert len(text) <= 60
        text.encode()
    assert time.monotonic() - start < 1


def test_schema_messages_quote_bounded_values(tmp_path):
    raw = read_config_file(DEFAULT)
    raw["run"]["seed"] = ["x" * 10_000] * 1_000
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    assert "key 'run.seed'" in str(info.value) and len(str(info.value)) < 300
