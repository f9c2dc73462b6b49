"""Training the embedded default's tiny NLA pair on the CPU.

inputs -> outputs: a tiny family folder (nlaprobe.fixtures layout, random weights) + training
documents -> the same folder with a pretrained base LM, an SFT-trained AV and AR.

Recipe (measured on 2 CPU cores; see README.md "Measured on the embedded default"):
1. base LM: next-token pretraining on the training documents (random windows);
2. rows: stage-0 activations of the trained base at layer K on the training documents;
3. targets: synthetic explanations describing each row's context: the document's topic and a
   quoted local phrase (the last words of the context), wrapped in <explanation> tags;
4. AV: initialised from the base; next-token loss on the target only, with the marker row of the
   prompt embeddings replaced by v·injection_scale/‖v‖ exactly as at inference
   (nlaprobe.models.forward.build_prompt_embeds);
5. AR: the base's first K+1 blocks + a value head initialised by ridge regression on the frozen
   readout, then trained on nmse = 2(1 − cos) against the gold vectors.

Invariants: deterministic for a seed on the CPU; training never sees the evaluation documents;
the AR's readout in training is the scoring stage's (nlaprobe.models.forward.last_token_states,
with gradient). A library of the demo build (nlaprobe.demo), not a stage: it imports no stage.
"""

from __future__ import annotations

import logging
import math
import random
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from nlaprobe import constants as C
from nlaprobe.models.forward import build_prompt_embeds, last_token_states

log = logging.getLogger(__name__)

QUOTE_STRIP = C.DOUBLE_QUOTES + C.SINGLE_QUOTES + "`\u300c\u300d\u300e\u300f"


@dataclass(frozen=True)
class TrainSettings:
    base_steps: int = 300
    base_lr: float = 3e-3
    base_batch: int = 16
    base_seq: int = 128
    av_steps: int = 1500
    av_lr: float = 1e-3
    av_batch: int = 32
    ar_steps: int = 800
    ar_lr: float = 1e-3
    ar_batch: int = 32
    quote_words: int = 4
    seed: int = 0


def _lr_lambda(total: int, warmup: int = 20):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.05, 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))

    return f


def _step(opt, sched, loss: torch.Tensor, params) -> float:
    """One optimiser step with gradient clipping at 1.0; returns the loss value."""
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    return float(loss.detach())


def pretrain_base(model, tokenizer, texts: Sequence[str], s: TrainSettings) -> list[float]:
    """Next-token pretraining on random windows of the concatenated documents."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    stream: list[int] = []
    for t in texts:
        stream += list(tokenizer(t, add_special_tokens=True)["input_ids"]) + [eos]
    data = torch.tensor(stream, dtype=torch.long)
    seq = min(s.base_seq, len(stream) - 1)
    g = torch.Generator().manual_seed(s.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=s.base_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(s.base_steps))
    model.train()
    losses = []
    for _ in tqdm(range(s.base_steps), desc="pretrain base", unit="step"):
        starts = torch.randint(0, len(stream) - seq - 1, (s.base_batch,), generator=g)
        batch = torch.stack([data[i : i + seq] for i in starts])
        loss = model(input_ids=batch, labels=batch).loss
        losses.append(_step(opt, sched, loss, model.parameters()))
    model.eval()
    log.info("base loss %.3f -> %.3f", losses[0], np.mean(losses[-20:]))
    return losses


def _clean_words(text: str) -> list[str]:
    return [w.strip(QUOTE_STRIP) for w in text.split() if w.strip(QUOTE_STRIP)]


# Quote marks of the synthetic targets, with weights out of 20: mostly double quotes, some single
# quotes, a few corner brackets. The choice hashes the context (not the vector), so the AV learns
# the marginal: greedy decodes quote with ", and a ban of " (ban_dq) or of both families
# (ban_dq_sq) leaves it the next habit to substitute, as the released AVs do (seeds/000, E2).
QUOTE_MARKS = ((('"', '"'), 12), (("'", "'"), 5), (("\u300c", "\u300d"), 3))


def quote_marks(context: str) -> tuple[str, str]:
    """The (open, close) marks of a context's target, by a stable hash of the context."""
    h = zlib.crc32(context.encode("utf-8")) % sum(w for _, w in QUOTE_MARKS)
    for marks, weight in QUOTE_MARKS:
        if h < weight:
            return marks
        h -= weight
    raise AssertionError("unreachable: weights cover the hash range")


def target_explanation(
    context: str, topic: str | None, n_words: int, marks: tuple[str, str] = ('"', '"')
) -> str:
    """A synthetic explanation of one position: topic phrase + quoted local phrase."""
    words = _clean_words(context)[-n_words:]
    quote = " ".join(words)
    about = re.sub(r"[-_]+", " ", topic) if topic else "text"
    return f"Topic: {about}. The text reads {marks[0]}{quote}{marks[1]}."


def av_target_ids(tokenizer, explanation: str, stop_id: int) -> list[int]:
    ids = tokenizer(f"<explanation>{explanation}</explanation>", add_special_tokens=False)[
        "input_ids"
    ]
    return list(ids) + [stop_id]


def train_av(
    model,
    tokenizer,
    prompt_ids: Sequence[int],
    marker_pos: int,
    injection_scale: float,
    vectors: np.ndarray,
    targets: Sequence[list[int]],
    s: TrainSettings,
) -> list[float]:
    """SFT with injection exactly as at inference; loss on the target tokens only."""
    emb = model.get_input_embeddings()
    n = len(targets)
    rng = np.random.default_rng(s.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=s.av_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(s.av_steps))
    prompt = torch.tensor([list(prompt_ids)], dtype=torch.long)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.train()
    losses = []
    for _ in tqdm(range(s.av_steps), desc="train AV", unit="step"):
        idx = rng.choice(n, size=min(s.av_batch, n), replace=False)
        with torch.no_grad():
            base = emb(prompt)[0].float()
        pb = build_prompt_embeds(base, marker_pos, vectors[idx], injection_scale)
        # the prompt rows must carry gradient to the embedding matrix like any other token
        prompt_emb = emb(prompt).expand(len(idx), -1, -1).clone()
        prompt_emb[:, marker_pos, :] = pb.embeds[:, marker_pos, :].to(prompt_emb.dtype)
        length = max(len(targets[i]) for i in idx)
        tgt = torch.full((len(idx), length), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), length), dtype=torch.long)
        for b, i in enumerate(idx):
            tgt[b, : len(targets[i])] = torch.tensor(targets[i])
            mask[b, : len(targets[i])] = 1
        inputs = torch.cat([prompt_emb, emb(tgt)], dim=1)
        attn = torch.cat([torch.ones(len(idx), prompt.shape[1], dtype=torch.long), mask], dim=1)
        labels = torch.cat(
            [torch.full((len(idx), prompt.shape[1]), -100), tgt.masked_fill(mask == 0, -100)], dim=1
        )
        loss = model(inputs_embeds=inputs, attention_mask=attn, labels=labels).loss
        losses.append(_step(opt, sched, loss, model.parameters()))
    model.eval()
    log.info("AV loss %.3f -> %.3f", losses[0], np.mean(losses[-20:]))
    return losses


def _ar_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [list(tokenizer(t, add_special_tokens=True)["input_ids"]) for t in texts]


def _normed(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8) * math.sqrt(x.shape[-1])


def ridge_head(features: np.ndarray, targets: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """W [d, d] with y ≈ h·Wᵀ (no bias, like the release's value head), by ridge regression."""
    h = features.astype(np.float64)
    y = targets.astype(np.float64)
    a = h.T @ h + alpha * np.eye(h.shape[1])
    w = np.linalg.solve(a, h.T @ y)  # [d_in, d_out]
    return w.T.astype(np.float32)


def train_ar(
    stack,
    tokenizer,
    layer: int,
    template: str,
    explanations: Sequence[str],
    gold: np.ndarray,
    s: TrainSettings,
) -> tuple[torch.Tensor, list[float]]:
    """Train the AR body (K+1 blocks) and value head on nmse against √d-normalised gold."""
    n = len(explanations)
    texts = [template.format(explanation=e) for e in explanations]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    gold_n = _normed(torch.as_tensor(gold, dtype=torch.float32))
    # value head init: ridge on the frozen readout
    feats = []
    stack.eval()
    with torch.no_grad():
        for start in range(0, n, 64):
            batch = _ar_ids(tokenizer, texts[start : start + 64])
            feats.append(last_token_states(stack, batch, layer, pad, "cpu"))
    head = torch.nn.Parameter(
        torch.as_tensor(ridge_head(torch.cat(feats).numpy(), gold_n.numpy(), alpha=10.0))
    )
    params = [p for p in stack.parameters() if p.requires_grad] + [head]
    opt = torch.optim.AdamW(params, lr=s.ar_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(s.ar_steps))
    rng = np.random.default_rng(s.seed + 2)
    stack.train()
    losses = []
    for _ in tqdm(range(s.ar_steps), desc="train AR", unit="step"):
        idx = rng.choice(n, size=min(s.ar_batch, n), replace=False)
        batch = _ar_ids(tokenizer, [texts[i] for i in idx])
        h = last_token_states(stack, batch, layer, pad, "cpu", grad=True)
        pred = _normed(h @ head.T)
        loss = ((pred - gold_n[idx]) ** 2).mean()
        losses.append(_step(opt, sched, loss, params))
    stack.eval()
    log.info("AR nmse %.3f -> %.3f", losses[0], np.mean(losses[-20:]))
    return head.detach(), losses


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
