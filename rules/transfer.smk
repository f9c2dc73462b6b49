# E7: every AV family x AR family, with a shuffled-pair null per cell.


rule transfer_matrix:
    input:
        P.aggregate_inputs("transfer_matrix"),
    output:
        "results/transfer_matrix.json",
    params:
        spec=lambda w, input: to_json(P.aggregate_job_spec("transfer_matrix", input)),
        config=to_json(config),
    log:
        "logs/transfer_matrix.log",
    benchmark:
        "benchmarks/rules/transfer_matrix.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m nlaprobe aggregate transfer_matrix --spec {params.spec:q}"
        " --config {params.config:q} --out {output:q} > {log:q} 2>&1"


rule stamp:
    output:
        "results/.stamps/{name}-{stag}.json",
    params:
        stamp=lambda w: to_json(P.stamp_params_for(w.name, w.stag)),
    log:
        "logs/stamp/{name}-{stag}.log",
    benchmark:
        "benchmarks/rules/stamp/{name}-{stag}.tsv"
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m nlaprobe stamp --params {params.stamp:q} --out {output:q} > {log:q} 2>&1"
