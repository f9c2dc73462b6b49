# The report: results/report.html (self-contained: tables with intervals, figures inline) and the
# same figures as files flagged for `snakemake --report`.


rule report:
    input:
        P.report_inputs(),
    output:
        html="results/report.html",
        figures=[
            report(f"results/figures/{fig}.png", category="Figures")
            for fig in figure_names()
        ],
    params:
        inputs=lambda w, input: to_json(list(input)),
        figdir=lambda w, output: os.path.dirname(output.figures[0]),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/rules/report.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    shell:
        "python -m nlaprobe report --inputs {params.inputs:q} --out {output.html:q}"
        " --figures {params.figdir:q} > {log:q} 2>&1"
