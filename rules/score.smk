# AR scoring of decodes (or redacted explanations) against the AR family's own aligned vectors.


rule score:
    input:
        unpack(
            lambda w: P.score_job(w.avtag, w.artag, w.cond, w.variant, w.shard).inputs
        ),
    output:
        "results/scores/av-{avtag}__ar-{artag}/{cond}/{variant}/shard-{shard}.parquet",
    params:
        # the job's checkpoint, params and provenance (JSON), built once per job
        job=lambda w: P.score_job(w.avtag, w.artag, w.cond, w.variant, w.shard),
        demo_root=lambda w, input: input.model[0] if input.model else "",
        device=P.device,
    log:
        "logs/score/av-{avtag}__ar-{artag}/{cond}/{variant}/shard-{shard}.log",
    benchmark:
        "benchmarks/rules/score/av-{avtag}__ar-{artag}/{cond}/{variant}/shard-{shard}.tsv"
    # estimated from the AR checkpoint, batch and explanation length (nlaprobe.resources)
    threads: P.job_threads("score")
    resources:
        mem_mb=P.job_resource("score", "mem_mb"),
        runtime=P.job_resource("score", "runtime"),
        gpu=P.rule_gpus("score"),
    conda:
        P.model_env
    shell:
        "python -m nlaprobe --threads {threads} --gpus {resources.gpu} score --checkpoint {params.job.checkpoint:q}"
        " --decodes {input.decodes:q} --gold {input.gold:q} --variant {wildcards.variant}"
        " --params {params.job.params:q} --out {output:q} --demo-root={params.demo_root:q}"
        " --provenance {params.job.provenance:q} --device {params.device} > {log:q} 2>&1"
