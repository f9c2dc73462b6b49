# Activation shards (all layers of a family from one forward pass) and the primary family's
# positions, which the other families align to by character offset.


rule extract:
    input:
        unpack(lambda w: P.extract_job(w.btag, w.split, w.shard).inputs),
    output:
        acts="results/activations/base-{btag}/{split}/shard-{shard}.parquet",
        meta="results/activations/base-{btag}/{split}/shard-{shard}.nla_meta.yaml",
    params:
        # the job's checkpoint, params and provenance (JSON), built once per job
        job=lambda w: P.extract_job(w.btag, w.split, w.shard),
        demo_root=lambda w, input: input.model[0] if input.model else "",
        positions=lambda w, input: input.get("positions", ""),
        device=P.device,
    log:
        "logs/extract/base-{btag}/{split}/shard-{shard}.log",
    benchmark:
        "benchmarks/rules/extract/base-{btag}/{split}/shard-{shard}.tsv"
    # estimated from the base checkpoint, batch and max length (nlaprobe.resources)
    threads: P.job_threads("extract")
    resources:
        mem_mb=P.job_resource("extract", "mem_mb"),
        runtime=P.job_resource("extract", "runtime"),
        gpu=P.rule_gpus("extract"),
    conda:
        P.model_env
    shell:
        "python -m nlaprobe --threads {threads} --gpus {resources.gpu} extract --checkpoint {params.job.checkpoint:q} --params {params.job.params:q}"
        " --corpus {input.corpus:q} --out {output.acts:q} --positions={params.positions:q}"
        " --demo-root={params.demo_root:q} --provenance {params.job.provenance:q}"
        " --device {params.device} > {log:q} 2>&1"


rule positions:
    input:
        "results/activations/base-{btag}/{split}/shard-{shard}.parquet",
    output:
        "results/positions/base-{btag}/{split}/shard-{shard}.parquet",
    log:
        "logs/positions/base-{btag}/{split}/shard-{shard}.log",
    benchmark:
        "benchmarks/rules/positions/base-{btag}/{split}/shard-{shard}.tsv"
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m nlaprobe positions --activations {input:q} --out {output:q} > {log:q} 2>&1"
