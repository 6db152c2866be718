# Cohort outputs: group tables, box plots; all in `snakemake --report` (with the per-subject QC pictures
# of finish_subject.smk).


report: "../report/workflow.rst"


rule subjects_table:
    output:
        table=report(PLAN.group_file("subjects"), caption="../report/subjects.rst", category="Cohort"),
    log:
        PLAN.log("subjects_table", "cohort"),
    localrule: True
    params:
        table=lambda wildcards: SUBJECTS.to_csv(sep="\t"),
    run:
        from wmhflow.io import atomic_output

        with atomic_output(output.table) as tmp:
            tmp.write_text(params.table)


rule aggregate:
    input:
        metrics=PLAN.metrics_files(),
        lesions=PLAN.lesion_files(),
        subjects=PLAN.group_file("subjects"),
    output:
        metrics=report(PLAN.group_file("metrics"), caption="../report/metrics.rst", category="Metrics"),
        summary=report(PLAN.group_file("summary"), caption="../report/summary.rst", category="Metrics"),
        comparison=report(PLAN.group_file("comparison"), caption="../report/comparison.rst", category="Metrics"),
        volumes=report(PLAN.group_file("volumes"), caption="../report/lesion_volumes.rst", category="Lesions"),
    log:
        PLAN.cohort_log("aggregate"),
    benchmark:
        PLAN.cohort_bench("aggregate")
    conda:
        "../../envs/report.yaml"
    params:
        split=config["report"]["summary_split"],
        out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
        # other model variants run before on this cohort join the comparison table (paper Table 2); a
        # function, so the search of results/ runs when this job is built, not at every parse of the
        # Snakefile (every snakemake call, and every job on a cluster node: 2-3 s at 10,000 subjects)
        other_variants=lambda wildcards: PLAN.other_variant_metrics(),
    shell:
        "wmhflow aggregate --metrics {input.metrics:q} {params.other_variants:q} --lesions {input.lesions:q} --subjects {input.subjects:q} "
        f"--model {MODEL} --split {{params.split:q}} --out-dir {{params.out_dir:q}} > {{log:q}} 2>&1"


rule plot_metrics:
    input:
        PLAN.group_file("metrics"),
    output:
        report(PLAN.group_file("boxplots"), caption="../report/boxplots.rst", category="Metrics"),
    log:
        PLAN.cohort_log("plot_metrics"),
    benchmark:
        PLAN.cohort_bench("plot_metrics")
    conda:
        "../../envs/report.yaml"
    params:
        split=config["report"]["summary_split"],
    shell:
        "wmhflow plot --metrics {input:q} --split {params.split:q} --output {output:q} > {log:q} 2>&1"
