"""The vLLM decode backend end to end (SPEC §4.6): only where vLLM and a CUDA GPU exist.

The fixture AV decoded greedily through `VLLMBackend` (prompt embeddings only, built by the same
function as the HF path from the checkpoint's embedding rows) must give the HF backend's text.
Elsewhere this module skips; the engine-independent halves (sampling parameters, prompt dicts)
are unit-tested in tests/unit/test_decode.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.gpu
@pytest.mark.parametrize("style", ["qwen", "gemma"])
def test_vllm_greedy_matches_hf(request, style):
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from nlaprobe import decode as D
    from nlaprobe.checkpoints import load_av, resolve_source

    fam = request.getfixturevalue(f"{style}_family")
    src = resolve_source({"path": str(fam / "av"), "dtype": "float32"}, "av")
    vecs = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    cond = D.parse_condition("greedy")

    def settings(av):
        return D.DecodeSettings(
            max_new_tokens=16,
            stop_token_ids=tuple(av.stop_token_ids),
            pad_token_id=av.tokenizer.pad_token_id or 0,
        )

    def run(engine, av, base):
        return D.decode_rows(
            engine,
            base,
            av.marker_pos,
            av.meta.injection_scale,
            vecs,
            [f"d:{i}" for i in range(4)],
            [50] * 4,
            cond,
            seed=42,
            batch_size=4,
            progress=False,
        )

    av = load_av(src, "cuda")
    hf = run(
        D.HFBackend(av.model, av.tokenizer, settings(av), "cuda"),
        av,
        D.prompt_token_embeds(av.model, av.prompt_ids),
    )
    del av.model
    torch.cuda.empty_cache()

    av = load_av(src, "cuda", load_model=False)
    engine = D.VLLMBackend(
        str(av.directory), av.tokenizer, settings(av), dtype="float32", gpu_memory_utilization=0.3
    )
    vl = run(engine, av, av.prompt_embeds_from_weights())
    assert [r["text"] for r in vl] == [r["text"] for r in hf]
    assert [r["n_tokens"] for r in vl] == [r["n_tokens"] for r in hf]
