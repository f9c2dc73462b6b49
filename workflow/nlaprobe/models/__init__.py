"""The models layer: everything about language models that the stages share.

- `architecture`: where a decoder-only LM keeps its blocks, Gemma's embedding scale, layer checks;
- `loading`: a checkpoint `Source` (nlaprobe.checkpoints) -> tokenizer, config, causal LM, AV, AR;
- `device`: the one resolver of a device name (`auto`, `cpu`, `cuda[:i]`);
- `forward`: the forward pass with hooks that reads residual-stream layers (with or without
  gradient) and the AV prompt embeddings with the injected vector;
- `activations`: activation rows of documents at sampled (or aligned) positions, in memory;
- `generation`: decode conditions, seeded requests and the generation loop with text checks;
- `backends`: the decode engines (HF, vLLM), registered by name, built with one signature.

Layering: stages (corpus, extract, decode, score, ridge_stage, demo, ...) import this layer and
the modules below it, never each other (tests/unit/test_layering.py); this layer imports no stage.
"""
