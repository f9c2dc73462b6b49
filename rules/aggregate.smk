# Every aggregate results/<name>.json, one rule each, named after its output: one per module of
# nlaprobe.aggregates (E1-E8). Each reads the files Plan.aggregate_spec lists and its stamp of own
# parameters, and its input record (Plan.aggregate_record, rule `record`), whose tagged name makes
# a changed input set a job to run even without Snakemake's metadata. The job plans its spec
# again from the config and the DAG's identity specs, and finds its inputs under one folder
# (Plan.aggregate_root: "" locally, the local copies under remote storage): its command does
# not grow with the shards.

for _name in aggregate_names():

    rule:
        name:
            _name
        input:
            files=P.aggregate_inputs(_name),
            record=P.aggregate_record(_name),
        output:
            P.aggregate_file(_name),
        params:
            name=_name,
            config=config_json(config),
            identity=to_json(P.identity()),
            root=P.aggregate_root_param(_name),
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
            "python -m nlaprobe aggregate {params.name} --config {params.config:q}"
            " --identity {params.identity:q} --root={params.root:q}"
            " --out {output:q} --record {input.record:q} > {log:q} 2>&1"


rule stamp:
    output:
        "results/.stamps/{name}-{stag}.json",
    params:
        stamp=lambda w: P.stamp_job(w.name, w.stag).params,
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


rule record:
    output:
        "results/.inputs/{name}-{itag}.json",
    params:
        record=lambda w: P.record_job(w.name, w.itag).params,
    log:
        "logs/record/{name}-{itag}.log",
    benchmark:
        "benchmarks/rules/record/{name}-{itag}.tsv"
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m nlaprobe record --params {params.record:q} --out {output:q} > {log:q} 2>&1"
