# E4: the greedy explanations edited for each redaction variant (quoted spans and escape hatches
# deleted, replaced or kept alone); scored by rules/score.smk with the variant as {variant}.


rule redact:
    input:
        unpack(lambda w: P.redact_job(w.avtag, w.variant, w.shard).inputs),
    output:
        "results/redacted/av-{avtag}/{variant}/shard-{shard}.parquet",
    log:
        "logs/redact/av-{avtag}/{variant}/shard-{shard}.log",
    benchmark:
        "benchmarks/rules/redact/av-{avtag}/{variant}/shard-{shard}.tsv"
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m nlaprobe redact --decodes {input.decodes:q} --variant {wildcards.variant}"
        " --out {output:q} > {log:q} 2>&1"
