# AV decodes of the evaluation split: one row per (activation row, sample). With
# `decode.backend: vllm` the job needs vLLM: from the interpreter that runs Snakemake (.venv after
# `make install-vllm`), or with --use-conda from envs/vllm-cpu.yaml (CPU) or envs/gpu.yaml (CUDA).


rule decode:
    input:
        unpack(lambda w: P.decode_job(w.avtag, w.cond, w.shard).inputs),
    output:
        "results/decodes/av-{avtag}/{cond}/shard-{shard}.parquet",
    params:
        # the job's checkpoint, params and provenance (JSON), built once per job
        job=lambda w: P.decode_job(w.avtag, w.cond, w.shard),
        demo_root=lambda w, input: input.model[0] if input.model else "",
        device=P.device,
    log:
        "logs/decode/av-{avtag}/{cond}/shard-{shard}.log",
    benchmark:
        "benchmarks/rules/decode/av-{avtag}/{cond}/shard-{shard}.tsv"
    # estimated from the AV checkpoint, batch, samples and new tokens (nlaprobe.resources)
    threads: P.job_threads("decode")
    resources:
        mem_mb=P.job_resource("decode", "mem_mb"),
        runtime=P.job_resource("decode", "runtime"),
        gpu=P.rule_gpus("decode"),
    conda:
        P.decode_env
    shell:
        "python -m nlaprobe --threads {threads} --gpus {resources.gpu} decode --checkpoint {params.job.checkpoint:q}"
        " --activations {input.acts:q} --cond {wildcards.cond} --params {params.job.params:q}"
        " --out {output:q} --demo-root={params.demo_root:q} --provenance {params.job.provenance:q}"
        " --device {params.device} > {log:q} 2>&1"
