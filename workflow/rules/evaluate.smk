# Challenge metrics against the reference, and lesion tables, per segmented subject.


def evaluate_targets():
    return [out(s, "metrics", ".tsv", desc=MODEL) for s in subjects_in("test")] + [
        out(s, "lesions", ".tsv", desc=MODEL) for s in subjects_in("test", "predict")
    ]


rule evaluate:
    input:
        reference=subject_file("reference"),
        mask=out("{subject}", "mask", desc=MODEL, label="WMH"),
    output:
        out("{subject}", "metrics", ".tsv", desc=MODEL),
    params:
        site=lambda wildcards: SUBJECTS.loc[wildcards.subject, "site"],
        split=lambda wildcards: SUBJECTS.loc[wildcards.subject, "split"],
    resources:
        mem_mb=2000,
        runtime=5,
    log:
        log(f"evaluate_{MODEL}"),
    benchmark:
        bench(f"evaluate_{MODEL}")
    shell:
        "wmhflow evaluate --reference {input.reference} --prediction {input.mask} "
        "--subject {wildcards.subject} --site '{params.site}' --split {params.split} "
        f"--model {MODEL} --output {{output}} > {{log}} 2>&1"


rule lesions:
    input:
        mask=out("{subject}", "mask", desc=MODEL, label="WMH"),
        probseg=out("{subject}", "probseg", desc=MODEL, label="WMH"),
    output:
        out("{subject}", "lesions", ".tsv", desc=MODEL),
    resources:
        mem_mb=2000,
        runtime=5,
    log:
        log(f"lesions_{MODEL}"),
    benchmark:
        bench(f"lesions_{MODEL}")
    shell:
        "wmhflow lesions --mask {input.mask} --probseg {input.probseg} --subject {wildcards.subject} "
        "--output {output} > {log} 2>&1"
