# E8: kernel ridge between the families' vectors (unit-normalised), trained on n aligned pairs of
# the ridge split, evaluated on the eval split; one job per (direction, n), every kernel in it.


rule ridge:
    input:
        unpack(lambda w: P.ridge_job(w.rtag, w.src, w.dst, int(w.n))["inputs"]),
    output:
        json="results/ridge/ridge-{rtag}/{src}_to_{dst}/n-{n}.json",
        npz="results/ridge/ridge-{rtag}/{src}_to_{dst}/n-{n}.npz",
    params:
        ridge=lambda w: P.ridge_job(w.rtag, w.src, w.dst, int(w.n))["params"],
        device=P.device,
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
        "../envs/cpu.yaml"
    shell:
        "python -m nlaprobe --threads {threads} --gpus {resources.gpu} ridge --n {wildcards.n} --params {params.ridge:q}"
        " --src-ridge {input.src_ridge:q} --dst-ridge {input.dst_ridge:q}"
        " --src-eval {input.src_eval:q} --dst-eval {input.dst_eval:q}"
        " --out-json {output.json:q} --out-npz {output.npz:q} --device {params.device}"
        " > {log:q} 2>&1"
