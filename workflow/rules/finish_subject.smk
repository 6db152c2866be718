# After a subject's segmentation, one job (`wmhflow steps`, one process) writes what is made from it:
# with segment.subjects_per_job > 1 it first places the subject's files from its chunk job
# (place-segmentation; infer_batch.smk says why the chunk job does not write them itself), then its
# lesion table (lesions) and its QC picture (qc). One job a subject instead of three: `snakemake -n`
# plans per job (README, "Planning"), and the subject's Python starts once. The files, their names and
# content are those of the one-verb rules this replaces (place_segmentation, lesions, qc). A subject
# whose chunk did not segment it fails here with place-segmentation's one line naming it and why; with
# --keep-going the others go on.

CHUNKED = PLAN.subjects_per_job > 1
SEGMENTATION = "output" if CHUNKED else "input"  # the mask and probseg: placed here, or infer's
FINISH_STEPS = [
    *(
        [
            "place-segmentation --status {input.status:q} --subject {wildcards.subject:q} "
            "--staging {params.staging:q} --probseg {output.probseg:q} --mask {output.mask:q}"
        ]
        if CHUNKED
        else []
    ),
    f"lesions --mask {{{SEGMENTATION}.mask:q}} --probseg {{{SEGMENTATION}.probseg:q}} "
    "{params.subject_options:q} --output {output.lesions:q}",
    f"qc --flair {{input.flair:q}} --mask {{{SEGMENTATION}.mask:q}} {{params.qc_options:q}} "
    "--slices {params.slices:q} --output {output.qc:q}",
]


# Chunked, the input is only the chunk's table: a chunk job run again (a fixed subject, a changed setting
# or model) places its subjects again (hard links of the cached files: no segmentation), and their lesion
# tables, QC pictures and evaluation are made again. (Not ancient(): when the chunk job has to run,
# Snakemake 9.27 does not look at the downstream jobs' own reasons, so a subject whose setting changed
# would keep its old files.)
rule finish_subject:
    input:
        **(dict(status=PLAN.chunk_status_of) if CHUNKED else dict(mask=PLAN.mask(), probseg=PLAN.probseg())),
        flair=subject_file("flair"),
    output:
        **(
            dict(
                probseg=PLAN.probseg(),
                mask=PLAN.mask(),
                sidecar=PLAN.mask_sidecar(),
            )
            if CHUNKED
            else {}
        ),
        lesions=out("{subject}", "lesions", ".tsv", desc=MODEL),
        qc=report(
            out("{subject}", "qc", ".png", desc=MODEL),
            caption="../report/qc.rst",
            category="QC",
            subcategory="{subject}",
            labels={"subject": "{subject}"},
        ),
    log:
        model_log("finish_subject"),
    benchmark:
        model_bench("finish_subject")
    conda:
        "../../envs/report.yaml"
    # the larger of its steps' sizes (lesions 2,000 MB, qc 1,000), their minutes added up (5 + 5)
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **(dict(staging=PLAN.chunk_staging()) if CHUNKED else {}),
        subject_options=PLAN.subject_options("subject", "session"),
        qc_options=PLAN.qc_options,
        slices=config["report"]["qc_slices"],
    shell:
        wmhflow_shell(*FINISH_STEPS)
