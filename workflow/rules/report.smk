# Cohort outputs: group tables, box plots, per-subject QC pictures; all in `snakemake --report`.


report: "../report/workflow.rst"


GROUP = f"{RESULTS}/group"


def report_targets():
    targets = [f"{GROUP}/metrics.tsv", f"{GROUP}/summary.tsv", f"{GROUP}/lesion_volumes.tsv",
               f"{GROUP}/model_comparison.tsv", f"{GROUP}/metrics_boxplots.png"]
    return targets + [out(s, "qc", ".png", desc=MODEL) for s in subjects_in("test", "predict")]


rule subjects_table:
    output:
        report(f"{GROUP}/subjects.tsv", caption="../report/subjects.rst", category="Cohort"),
    params:
        table=lambda wildcards: SUBJECTS.to_csv(sep="\t"),
    log:
        f"{RESULTS}/logs/subjects_table.log",
    run:
        from wmhflow.io import atomic_output

        with atomic_output(output[0]) as tmp:
            tmp.write_text(params.table)


rule aggregate:
    input:
        metrics=[out(s, "metrics", ".tsv", desc=MODEL) for s in subjects_in("test")],
        lesions=[out(s, "lesions", ".tsv", desc=MODEL) for s in subjects_in("test", "predict")],
        subjects=f"{GROUP}/subjects.tsv",
    output:
        metrics=report(f"{GROUP}/metrics.tsv", caption="../report/metrics.rst", category="Metrics"),
        summary=report(f"{GROUP}/summary.tsv", caption="../report/summary.rst", category="Metrics"),
        comparison=report(f"{GROUP}/model_comparison.tsv", caption="../report/comparison.rst", category="Metrics"),
        volumes=report(f"{GROUP}/lesion_volumes.tsv", caption="../report/lesion_volumes.rst", category="Lesions"),
    params:
        split=config["report"]["summary_split"],
    log:
        f"{RESULTS}/logs/aggregate/{MODEL}.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate/{MODEL}.tsv"
    shell:
        "wmhflow aggregate --metrics {input.metrics} --lesions {input.lesions} --subjects {input.subjects} "
        f"--model {MODEL} --split {{params.split}} --out-dir {GROUP} > {{log}} 2>&1"


rule plot_metrics:
    input:
        f"{GROUP}/metrics.tsv",
    output:
        report(f"{GROUP}/metrics_boxplots.png", caption="../report/boxplots.rst", category="Metrics"),
    params:
        split=config["report"]["summary_split"],
    log:
        f"{RESULTS}/logs/plot_metrics/{MODEL}.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_metrics/{MODEL}.tsv"
    shell:
        "wmhflow plot --metrics {input} --split {params.split} --output {output} > {log} 2>&1"


rule qc:
    input:
        flair=subject_file("flair"),
        mask=out("{subject}", "mask", desc=MODEL, label="WMH"),
    output:
        report(
            out("{subject}", "qc", ".png", desc=MODEL),
            caption="../report/qc.rst",
            category="QC",
            subcategory="{subject}",
            labels={"subject": "{subject}"},
        ),
    params:
        reference=lambda wildcards: SUBJECTS.loc[wildcards.subject, "reference"],
        title=lambda wildcards: f"sub-{wildcards.subject} ({SUBJECTS.loc[wildcards.subject, 'site']}), model {MODEL}",
        slices=config["report"]["qc_slices"],
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        log(f"qc_{MODEL}"),
    benchmark:
        bench(f"qc_{MODEL}")
    shell:
        "wmhflow qc --flair {input.flair} --mask {input.mask} --reference '{params.reference}' "
        "--title '{params.title}' --slices {params.slices} --output {output} > {log} 2>&1"
