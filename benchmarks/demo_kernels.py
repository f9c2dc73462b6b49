"""Cost of the portable CPU kernels (nlaprobe.kernels) in the demo build: the same reduced
`build-demo` run with the machine's own kernels and with the portable ones, side by side.

Each run is a fresh process of one thread building the Qwen2-style family with the default's
demo settings (config/config.yaml) and, by default, fewer training steps (--base-steps,
--av-steps, --ar-steps, --ar-mix-rows; the default's own are 200, 1000, 600 and 4096). Variants:
  native      `build_demo` called without the pin: the kernels this CPU selects;
  portable    `python -m nlaprobe build-demo` (the CLI pins PORTABLE_ENV);
  compatible  the pin with MKL's COMPATIBLE branch instead of AVX2 (MKL's documented route to
              the same results on non-Intel x86 CPUs too).
Runs alternate (native, portable, ..., native, portable, ...) so that a change in machine load
affects every variant alike; the best wall time of each counts. Prints each variant's time, its
ratio to `native` and the digest of its weights (equal across the repeats of a variant: each is
deterministic; different between variants: the kernels change the trained weights).

    python benchmarks/demo_kernels.py [--repeats 2] [--variants native,portable,compatible]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nlaprobe.config import load_config, validate_config
from nlaprobe.kernels import PORTABLE_ENV
from nlaprobe.plan import demo_params

ROOT = Path(__file__).resolve().parent.parent
UNPINNED_BUILD = (
    "import json, sys, torch; from pathlib import Path; "
    "from nlaprobe.demo import DemoParams, build_demo; torch.set_num_threads(1); "
    "build_demo('qwen', Path(sys.argv[2]), DemoParams.from_json(json.loads(sys.argv[1])))"
)
VARIANTS = {
    "native": None,
    "portable": PORTABLE_ENV,
    "compatible": {**PORTABLE_ENV, "MKL_CBWR": "COMPATIBLE"},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-steps", type=int, default=20)
    p.add_argument("--av-steps", type=int, default=20)
    p.add_argument("--ar-steps", type=int, default=20)
    p.add_argument("--ar-mix-rows", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variants", default="native,portable")
    return p.parse_args()


def weights_digest(family: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(family.rglob("*.safetensors")):
        h.update(str(f.relative_to(family)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def run(variant: str, params: dict, out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    pinned = VARIANTS[variant]
    if variant == "portable":
        cmd = [sys.executable, "-m", "nlaprobe", "--threads", "1", "build-demo"]
        cmd += ["--style", "qwen", "--params", json.dumps(params), "--out", str(out)]
    else:
        env.update(pinned or {})
        cmd = [sys.executable, "-c", UNPINNED_BUILD, json.dumps(params), str(out)]
    start = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if p.returncode:
        sys.exit(f"{variant}: build failed\n{p.stderr[-3000:]}")
    return took


def main() -> None:
    args = parse_args()
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown or "native" not in variants:
        sys.exit(f"--variants: from {sorted(VARIANTS)}, including native; got {args.variants}")
    cfg = validate_config(load_config([ROOT / "config" / "config.yaml"]), source="config.yaml")
    params = demo_params(cfg, "qwen")
    params["train"] = {
        **params["train"],
        "base_steps": args.base_steps,
        "av_steps": args.av_steps,
        "ar_steps": args.ar_steps,
        "ar_mix_rows": args.ar_mix_rows,
    }
    best = dict.fromkeys(variants, float("inf"))
    digests: dict[str, set[str]] = {v: set() for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for v in variants:
                out = Path(tmp) / f"{v}-{r}"
                best[v] = min(best[v], run(v, params, out))
                digests[v].add(weights_digest(out))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(
        f"build-demo (qwen, default sizes; steps base {args.base_steps}, AV "
        f"{args.av_steps}, AR {args.ar_steps}; AR-mix rows {args.ar_mix_rows}; 1 thread), "
        f"best of {args.repeats}; load average after: {' '.join(load)}"
    )
    for v in variants:
        d = ", ".join(sorted(digests[v]))
        same = "deterministic" if len(digests[v]) == 1 else "NOT deterministic"
        print(
            f"{v:11s} {best[v]:7.1f} s  {best[v] / best['native']:5.2f}x native  "
            f"weights {d} ({same})"
        )


if __name__ == "__main__":
    main()
