# Every aggregate results/<name>.json (E1-E8: fve_baseline, quote_ablation, verbatim, redaction,
# best_of_n, layers, transfer_matrix, ridge_scaling), one rule each, named after its output. Each
# reads the files Plan.aggregate_spec lists (job-local copies) and its stamp of own parameters,
# and also writes its input record (Plan.aggregate_record), whose tagged name makes a changed
# input set a missing output even without Snakemake's metadata.

for _name in AGGREGATES:

    rule:
        name:
            _name
        input:
            P.aggregate_inputs(_name),
        output:
            json=f"results/{_name}.json",
            record=P.aggregate_record(_name),
        params:
            name=_name,
            spec=P.aggregate_spec_param(_name),
            config=to_json(config),
        log:
            f"logs/{_name}.log",
        benchmark:
            f"benchmarks/rules/{_name}.tsv"
        resources:
            mem_mb=8000,
            runtime=60,
        conda:
            "../envs/cpu.yaml"
        shell:
            "python -m nlaprobe aggregate {params.name} --spec {params.spec:q}"
            " --config {params.config:q} --out {output.json:q} --record {output.record:q}"
            " > {log:q} 2>&1"


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
