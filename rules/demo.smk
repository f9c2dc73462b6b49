# The embedded default's tiny NLA families (release layout), built offline on the CPU.


rule build_demo:
    # the whole folder is the output, so remote storage stores (and a fresh machine retrieves)
    # every file of the three checkpoints; `out` is the job's path of it (a local copy there)
    output:
        directory("results/demo/demo-{dtag}/{style}"),
    params:
        demo=lambda w: P.demo_job(w.dtag, w.style).params,
        out=lambda w, output: output[0],
    log:
        "logs/build_demo/demo-{dtag}/{style}.log",
    benchmark:
        "benchmarks/rules/build_demo/demo-{dtag}/{style}.tsv"
    # estimated from the demo sizes and training steps (nlaprobe.resources); tiny models
    # train on one thread each, side by side
    threads: P.job_threads("build_demo")
    resources:
        mem_mb=P.job_resource("build_demo", "mem_mb"),
        runtime=P.job_resource("build_demo", "runtime"),
        gpu=P.rule_gpus("build_demo"),
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m nlaprobe --threads {threads} --gpus {resources.gpu} build-demo --style {wildcards.style} --params {params.demo:q}"
        " --out {params.out:q} > {log:q} 2>&1"
