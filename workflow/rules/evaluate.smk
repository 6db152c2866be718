# Challenge metrics against the reference, per test subject (lesion tables: finish_subject.smk).


rule evaluate:
    input:
        reference=subject_file("reference"),
        mask=PLAN.mask(),
    output:
        out("{subject}", "metrics", ".tsv", desc=MODEL),
    log:
        model_log("evaluate"),
    benchmark:
        model_bench("evaluate")
    conda:
        "../../envs/report.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        subject_options=PLAN.subject_options("subject", "session", "site", "split"),
    shell:
        "wmhflow evaluate --reference {input.reference:q} --prediction {input.mask:q} "
        "{params.subject_options:q} "
        f"--model {MODEL} --output {{output:q}} > {{log:q}} 2>&1"
