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
        subject=subject_value("subject"),
        session=subject_value("session"),
        site=subject_value("site"),
        split=subject_value("split"),
    shell:
        "wmhflow evaluate --reference {input.reference:q} --prediction {input.mask:q} "
        "--subject {params.subject:q} --session={params.session:q} --site {params.site:q} --split {params.split:q} "
        f"--model {MODEL} --output {{output:q}} > {{log:q}} 2>&1"
