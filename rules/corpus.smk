# Corpus shards: documents by absolute index range, `shard_docs` per shard.


rule corpus:
    output:
        "results/corpus/corpus-{ctag}/{split}/shard-{shard}.parquet",
    params:
        corpus=lambda w: P.corpus_job(w.ctag, w.split).params,
    log:
        "logs/corpus/corpus-{ctag}/{split}/shard-{shard}.log",
    benchmark:
        "benchmarks/rules/corpus/corpus-{ctag}/{split}/shard-{shard}.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m nlaprobe corpus --params {params.corpus:q} --split {wildcards.split}"
        " --shard {wildcards.shard} --out {output:q} > {log:q} 2>&1"
