"""Resource requests from the config (nlaprobe.resources), against hand-computed values."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from nlaprobe import resources as R
from nlaprobe.config import read_config_file, validate_config
from nlaprobe.errors import ConfigError
from nlaprobe.extract import ExtractParams
from nlaprobe.plan import Plan

REPO = Path(__file__).resolve().parents[2]
# the node of the issue (a one-node Slurm without GPUs) and an 80 GB GPU
SMALL_NODE_MB, SMALL_NODE_CPUS = 20000, 2
GPU_80GB_MB = 80000


def plan_of(name: str, mutate=None) -> Plan:
    raw = read_config_file(REPO / "config" / f"{name}.yaml")
    if mutate is not None:
        raw = copy.deepcopy(raw)
        mutate(raw)
    return Plan(validate_config(raw, source=name))


def test_gemma_27b_parameter_count_by_hand():
    # embeddings 262208 x 5376 (tied); per block q, o 2 x 5376 x 4096, k, v 2 x 5376 x 2048,
    # MLP 3 x 5376 x 21504, 4 norms of 5376; 62 blocks; final norm; SigLIP tower 0.42 B
    embed = 262208 * 5376
    block = 2 * 5376 * 4096 + 2 * 5376 * 2048 + 3 * 5376 * 21504 + 4 * 5376
    assert embed == 1_409_630_208 and block == 412_898_304
    base = R.KNOWN_MODELS["google/gemma-3-27b-it"]
    assert base.params == embed + 62 * block + 5376 + 0.42e9 == pytest.approx(27.43e9, rel=1e-3)
    # the AR keeps K + 1 = 42 blocks and adds a 5376 x 5376 value head
    ar = R.KNOWN_MODELS["kitft/nla-gemma3-27b-L41-ar"]
    assert ar.params == embed + 42 * block + 5376 + 5376**2


def test_qwen_7b_parameter_count_matches_the_published_size():
    # untied lm_head: 2 x 152064 x 3584; 28 blocks of 233,058,304 -> 7.62 B (published 7.61 B)
    qwen = R.KNOWN_MODELS["Qwen/Qwen2.5-7B-Instruct"]
    assert qwen.params == pytest.approx(7.6157e9, rel=1e-4)
    assert R.KNOWN_MODELS["kitft/nla-qwen2.5-7b-L20-ar"].params < qwen.params


def test_27b_bf16_extraction_on_a_gpu_by_hand():
    """Gemma-3-27B in bfloat16: 54.9 GB of weights; batch 4 x 4096 tokens of workspace:
    residual/MLP 4 x 4096 x (4 x 5376 + 2 x 21504) x 2 B = 2.11 GB and attention scores
    4 x 32 heads x 4096^2 x 2 B = 4.29 GB."""
    arch = R.KNOWN_MODELS["google/gemma-3-27b-it"]
    req = R.extract_request(arch, 2, docs=50, batch=4, max_length=4096, on_gpu=True)
    weights = arch.params * 2
    assert weights == pytest.approx(54.86e9, rel=1e-3)
    work = 4 * 4096 * (4 * 5376 + 2 * 21504) * 2 + 4 * 32 * 4096**2 * 2
    assert work == 6_408_896_512
    # GPU: 1.05 x weights + 1.25 x workspace + 1 GB context = 66,612.7 MB -> 66,700
    assert req.gpu_mem_mb == 66700
    # host: the weights pass through (transformers loads on the CPU) + 1.25 x 1 GB process
    assert req.mem_mb == 58900
    # 60 s start + 548.6 s reading 54.9 GB at 100 MB/s + 2 x 27.43e9 x 204,800 tokens at
    # 20 TFLOP/s (561.8 s), x 2 -> 39.0 min -> 40
    assert req.runtime == 40
    assert (req.gpu, req.threads) == (1, R.GPU_JOB_THREADS)


def test_the_demo_families_are_tiny():
    """The reduced default's demo family: 70,176 parameters (embeddings 2 x 512 x 32, 4 blocks
    of 9,344, final norm): 0.28 MB in float32. A job's request is the process itself."""
    demo = {
        "vocab_size": 512,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_layers": 4,
        "num_heads": 4,
        "num_kv_heads": 2,
    }
    arch = R.demo_arch(demo)
    assert arch.params == 2 * 512 * 32 + 4 * (2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64 + 4 * 32) + 32
    assert arch.params == 70_176
    req = R.decode_request(arch, 4, sequences=32, batch=16, new_tokens=48, on_gpu=False)
    # KV cache 16 x 176 x 2 x 4 x 16 x 4 B + logits 2 x 16 x 512 x 4 B = 1.51 MB; (1 GB + 1.51
    # MB) x 1.25 + 1.05 x 0.28 MB = 1,252.2 MB -> 1,300
    assert req.mem_mb == 1300
    assert (req.runtime, req.threads, req.gpu, req.gpu_mem_mb) == (R.MIN_RUNTIME_MIN, 1, 0, 0)


def test_default_config_fits_a_small_cpu_node():
    """Every job of the embedded default fits the issue's node (20,000 MB, 2 CPUs, no GPU) with
    room for a second job beside it."""
    summary = plan_of("config").resource_summary()
    assert set(summary) == {"build_demo", "extract", "decode", "score", "ridge"}
    for rule, jobs in summary.items():
        for key, req in jobs.items():
            assert req["mem_mb"] <= SMALL_NODE_MB // 2, (rule, key, req)
            assert req["threads"] <= SMALL_NODE_CPUS // 2 and req["gpu"] == 0, (rule, key, req)


def test_paper_config_needs_one_80gb_gpu_per_model_job():
    summary = plan_of("paper").resource_summary()
    assert "build_demo" not in summary
    gemma = {rule: summary[rule]["gemma"] for rule in ("extract", "decode", "score")}
    for rule, req in gemma.items():
        assert req["gpu"] == 1 and req["gpu_mem_mb"] <= GPU_80GB_MB, (rule, req)
        # the 27B weights alone are 54.9 GB (bf16); the host holds them while loading
        assert req["mem_mb"] > 40000, (rule, req)
    # the 7B family needs far less than the 27B one
    for rule in ("extract", "decode", "score"):
        assert summary[rule]["qwen"]["mem_mb"] < summary[rule]["gemma"]["mem_mb"] / 2
    # E8 at n = 20,000: four float64 kernel copies of 20,000^2 (12.8 GB) on the GPU
    ridge = summary["ridge"]["gemma_to_qwen"]
    assert ridge["gpu_mem_mb"] > 4 * 20000**2 * 8 / 1e6


def test_resources_follow_the_batch_and_the_dtype():
    before = plan_of("paper")
    b = before.extract_request("gemma", "eval")

    def float32(raw):
        raw["families"]["gemma"]["base"]["dtype"] = "float32"

    # twice the bytes per weight: the host holds 1.05 x 109.7 GB instead of 54.9 GB
    a = plan_of("paper", float32).extract_request("gemma", "eval")
    assert a.mem_mb - b.mem_mb == pytest.approx(1.05 * 27.43e9 * 2 / 1e6, abs=100)

    def batch_one(raw):
        raw["sampling"]["batch_size"] = 1

    # a quarter of the 6.41 GB workspace on the GPU (x 1.25): 6,008 MB less
    a = plan_of("paper", batch_one).extract_request("gemma", "eval")
    assert b.gpu_mem_mb - a.gpu_mem_mb == pytest.approx(1.25 * 6_408_896_512 * 3 / 4 / 1e6, abs=100)
    assert a.mem_mb == b.mem_mb  # on a GPU the workspace is not in host memory


def test_job_request_reads_the_wildcards():
    plan = plan_of("config")
    w = SimpleNamespace(btag=plan.activation_tag("gemma", "eval"), split="eval", shard="00000")
    assert plan.job_request("extract", w) == plan.extract_request("gemma", "eval")
    assert plan.job_threads("extract")(w) == 1
    assert plan.job_resource("extract", "mem_mb")(w) == plan.extract_request("gemma", "eval").mem_mb
    w = SimpleNamespace(avtag=plan.decode_tag("qwen"), cond="sample_t1", shard="00000")
    sampled = plan.job_request("decode", w)
    greedy = plan.decode_request("qwen", "greedy")
    assert sampled == plan.decode_request("qwen", "sample_t1") and sampled.runtime >= greedy.runtime
    w = SimpleNamespace(rtag=plan.ridge_tag(), src="qwen", dst="gemma", n="160")
    assert plan.job_request("ridge", w) == plan.ridge_request("qwen", "gemma", 160)
    with pytest.raises(ConfigError, match=r"no resource estimate for rule 'corpus'"):
        plan.job_request("corpus", w)


def test_an_unknown_checkpoint_needs_its_size(tmp_path, monkeypatch):
    """A local folder without a config.json of a known architecture: its size must be given."""
    from nlaprobe import fingerprint

    monkeypatch.setenv(fingerprint.CACHE_ENV, str(tmp_path / "fingerprints.json"))
    ar = tmp_path / "my-ar"
    ar.mkdir()
    (ar / "model.safetensors").write_bytes(b"weights of no known architecture")

    def swap(raw):
        raw["families"]["qwen"]["ar"] = {"path": str(ar), "dtype": "float32"}

    plan = plan_of("config", swap)
    with pytest.raises(ConfigError, match=r"families\.qwen\.ar: .*my-ar.*params_b"):
        plan.score_request("qwen", "greedy")

    def sized(raw):
        raw["families"]["qwen"]["ar"] = {"path": str(ar), "dtype": "float32", "params_b": 0.5}

    plan = plan_of("config", sized)
    assert plan.arch("qwen", "ar").params >= 0.5e9
    # 0.5 B in float32: 2 GB of weights
    assert plan.score_request("qwen", "greedy").mem_mb > 2000


def test_params_b_overrides_the_table_and_keeps_the_tag():
    def bigger(raw):
        raw["families"]["qwen"]["av"]["params_b"] = 14.0

    before, after = plan_of("paper"), plan_of("paper", bigger)
    assert after.arch("qwen", "av").params == pytest.approx(14e9)
    assert (
        after.decode_request("qwen", "greedy").mem_mb
        > before.decode_request("qwen", "greedy").mem_mb
    )
    # a resource hint, not identity: the same paths
    assert after.decode_tag("qwen") == before.decode_tag("qwen")


@pytest.mark.parametrize("params", [0.5e9, 7e9, 70e9])
def test_arch_from_params_is_at_least_the_size_given(params):
    arch = R.arch_from_params(params)
    assert arch.params >= params
    # full multi-head attention: the KV width is the hidden size
    assert arch.kv_dim == arch.hidden and arch.hidden % 128 == 0


def test_largest_is_element_wise():
    a = R.Request(1000, 30, 1, 0, 0)
    b = R.Request(500, 60, 4, 1, 2000)
    assert R.largest([a, b]) == R.Request(1000, 60, 4, 1, 2000)


def test_tensor_parallel_decodes_request_that_many_gpus():
    def tp4(raw):
        raw["decode"]["tensor_parallel_size"] = 4

    one, four = plan_of("paper"), plan_of("paper", tp4)
    a, b = one.decode_request("gemma", "greedy"), four.decode_request("gemma", "greedy")
    assert (a.gpu, b.gpu) == (1, 4)
    # per device: weights and workspace split 4 ways, each device with its own context
    assert b.gpu_mem_mb - R.GPU_CONTEXT_MB == pytest.approx(
        (a.gpu_mem_mb - R.GPU_CONTEXT_MB) / 4, abs=100
    )
    assert (b.mem_mb, b.runtime) == (a.mem_mb, a.runtime)
    w = SimpleNamespace(avtag=four.decode_tag("gemma"), cond="greedy", shard="00000")
    assert four.job_resource("decode", "gpu")(w) == 4
    job = four.decode_job(four.decode_tag("gemma"), "greedy", "00000")
    assert '"tensor_parallel_size":4' in job.params
    # an execution setting, like batch_size: no tag moves
    assert four.decode_tag("gemma") == one.decode_tag("gemma")
    # no extraction or scoring job asks for more than one
    assert (
        four.extract_request("gemma", "eval").gpu == four.score_request("gemma", "greedy").gpu == 1
    )


def test_extraction_over_several_gpus():
    def spread(raw):
        raw["sampling"].update(device_map="auto", gpus_per_job=2)

    one, two = plan_of("paper"), plan_of("paper", spread)
    a, b = one.extract_request("gemma", "eval"), two.extract_request("gemma", "eval")
    assert (a.gpu, b.gpu) == (1, 2)
    assert b.gpu_mem_mb - R.GPU_CONTEXT_MB == pytest.approx(
        (a.gpu_mem_mb - R.GPU_CONTEXT_MB) / 2, abs=100
    )
    assert two.activation_tag("gemma", "eval") == one.activation_tag("gemma", "eval")
    params = two.extract_job(two.activation_tag("gemma", "eval"), "eval", "00000").params
    # what the extraction CLI parses: the stage loads the base with device_map="auto"
    assert ExtractParams.from_json(json.loads(params)).device_map == "auto"
    one_params = one.extract_job(one.activation_tag("gemma", "eval"), "eval", "00000").params
    assert ExtractParams.from_json(json.loads(one_params)).device_map is None


def test_cpu_configs_request_no_gpu():
    plan = plan_of("config")  # the embedded default runs on the CPU
    assert plan.gpus() == 0
    assert (
        plan.decode_request("qwen", "greedy").gpu == plan.extract_request("qwen", "eval").gpu == 0
    )


@pytest.mark.parametrize("name", ["config", "paper"])
@pytest.mark.parametrize("tp", [1, 3])
def test_rule_gpus_equal_every_job_request(name, tp):
    """The rules declare `gpu` per rule (Plan.rule_gpus); every job's own request agrees."""

    def mutate(raw):
        if tp > 1:
            raw["decode"].update(backend="vllm", tensor_parallel_size=tp)
            raw["sampling"].update(device_map="auto", gpus_per_job=2)
            raw["run"]["device"] = "cuda"

    plan = plan_of(name, mutate)
    for fam in plan.families:
        for split in ("eval", "ridge"):
            assert plan.extract_request(fam, split).gpu == plan.rule_gpus("extract")
        for cond in plan.conditions(fam):
            assert plan.decode_request(fam, cond).gpu == plan.rule_gpus("decode")
            assert plan.score_request(fam, cond).gpu == plan.rule_gpus("score")
    for src, dst in plan.ridge_directions():
        for n in plan.ridge_sizes():
            assert plan.ridge_request(src, dst, n).gpu == plan.rule_gpus("ridge")
    for style in plan.demo_styles():
        assert plan.demo_request(style).gpu == plan.rule_gpus("build_demo")
    expected = {"decode": tp, "extract": 2} if tp > 1 else {}
    on_gpu = plan.gpus()
    assert plan.rule_gpus("decode") == expected.get("decode", on_gpu)
    assert plan.rule_gpus("extract") == expected.get("extract", on_gpu)
    with pytest.raises(ConfigError, match="no resource estimate for rule 'corpus'"):
        plan.rule_gpus("corpus")


def test_a_local_folder_is_sized_from_its_config_json(tmp_path, monkeypatch):
    """A `path:` checkpoint with a config.json needs no params_b. Hand count for vocab 100,
    hidden 8, MLP 16, 2 blocks, 2 query heads of 4, 1 key/value head, untied lm_head:
    block = 2*8*8 (q, o) + 2*8*4 (k, v) + 3*8*16 (MLP) + 4*8 (norms) = 608; embeddings
    100*8*2 = 1,600; total 1,600 + 2*608 + 8 (final norm) = 2,824. The multimodal wrapper's
    text_config with tied embeddings (the default): 800 + 1,216 + 8 = 2,024."""
    import json

    from nlaprobe import fingerprint

    monkeypatch.setenv(fingerprint.CACHE_ENV, str(tmp_path / "fingerprints.json"))
    text = {
        "vocab_size": 100,
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }
    ar, av = tmp_path / "ar", tmp_path / "av"
    for folder, cfg in ((ar, {**text, "tie_word_embeddings": False}), (av, {"text_config": text})):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(cfg))

    def local(raw):
        raw["families"]["qwen"]["ar"] = {"path": str(ar), "dtype": "float32"}
        raw["families"]["qwen"]["av"] = {"path": str(av), "dtype": "float32"}

    plan = plan_of("config", local)
    assert plan.arch("qwen", "ar").params == 2824
    assert plan.arch("qwen", "av").params == 2024
    assert plan.score_request("qwen", "greedy").gpu == 0  # and it plans

    (ar / "config.json").write_text(json.dumps({**text, "hidden_size": "8"}))
    with pytest.raises(ConfigError, match=r"families\.qwen\.ar: config\.json lacks .*hidden_size"):
        plan_of("config", local).arch("qwen", "ar")
