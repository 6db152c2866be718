# Challenge metrics against the reference, and lesion tables, per segmented subject.


rule evaluate:
    input:
        reference=subject_file("reference"),
        mask=PLAN.mask(),
    output:
        out("{subject}", "metrics", ".tsv", desc=MODEL),
    params:
        site=subject_value("site"),
        split=subject_value("split"),
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../../envs/report.yaml"
    log:
        log(f"evaluate_{MODEL}"),
    benchmark:
        bench(f"evaluate_{MODEL}")
    shell:
        "wmhflow evaluate --reference {input.reference:q} --prediction {input.mask:q} "
        "--subject {wildcards.subject} --site {params.site:q} --split {params.split:q} "
        f"--model {MODEL} --output {{output:q}} > {{log:q}} 2>&1"


rule lesions:
    input:
        mask=PLAN.mask(),
        probseg=PLAN.probseg(),
    output:
        out("{subject}", "lesions", ".tsv", desc=MODEL),
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../../envs/report.yaml"
    log:
        log(f"lesions_{MODEL}"),
    benchmark:
        bench(f"lesions_{MODEL}")
    shell:
        "wmhflow lesions --mask {input.mask:q} --probseg {input.probseg:q} --subject {wildcards.subject} "
        "--output {output:q} > {log:q} 2>&1"
