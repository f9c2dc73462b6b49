# E8: kernel ridge between the families' vectors (unit-normalised), trained on n aligned pairs of
# the ridge split, evaluated on the eval split; one job per (direction, n), every kernel in it.
# The job gets each shard list as its folder and the shard count (nlaprobe.plan.shard_folder,
# checked against Snakemake's input), so its command does not grow with the shards.


rule ridge:
    input:
        unpack(lambda w: P.ridge_job(w.rtag, w.src, w.dst, int(w.n)).inputs),
    output:
        json="results/ridge/ridge-{rtag}/{src}_to_{dst}/n-{n}.json",
        npz="results/ridge/ridge-{rtag}/{src}_to_{dst}/n-{n}.npz",
    params:
        ridge=lambda w: P.ridge_job(w.rtag, w.src, w.dst, int(w.n)).params,
        device=P.device,
        src_ridge=lambda w, input: shard_folder(input.src_ridge),
        dst_ridge=lambda w, input: shard_folder(input.dst_ridge),
        src_eval=lambda w, input: shard_folder(input.src_eval),
        dst_eval=lambda w, input: shard_folder(input.dst_eval),
        n_ridge=lambda w, input: shard_count(input.src_ridge, input.dst_ridge),
        n_eval=lambda w, input: shard_count(input.src_eval, input.dst_eval),
    log:
        "logs/ridge/ridge-{rtag}/{src}_to_{dst}/n-{n}.log",
    benchmark:
        "benchmarks/rules/ridge/ridge-{rtag}/{src}_to_{dst}/n-{n}.tsv"
    # estimated from n, the families' widths and the kernels (nlaprobe.resources)
    threads: P.job_threads("ridge")
    resources:
        mem_mb=P.job_resource("ridge", "mem_mb"),
        runtime=P.job_resource("ridge", "runtime"),
        gpu=P.rule_gpus("ridge"),
    conda:
        P.model_env
    shell:
        "python -m nlaprobe --threads {threads} --gpus {resources.gpu} ridge --n {wildcards.n}"
        " --params {params.ridge:q}"
        " --src-ridge {params.src_ridge:q} --dst-ridge {params.dst_ridge:q}"
        " --src-eval {params.src_eval:q} --dst-eval {params.dst_eval:q}"
        " --ridge-shards {params.n_ridge} --eval-shards {params.n_eval}"
        " --out-json {output.json:q} --out-npz {output.npz:q} --device {params.device}"
        " > {log:q} 2>&1"
