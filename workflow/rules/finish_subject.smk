# After a subject's segmentation, one job (`wmhflow steps`, one process) writes what is made from it:
# with segment.subjects_per_job > 1 it first places the subject's files from its chunk job
# (place-segmentation; infer_batch.smk says why the chunk job does not write them itself), then its
# lesion table (lesions), its QC picture (qc) and, for a test subject, its challenge metrics against the
# reference (evaluate). One job a subject instead of four: `snakemake -n` plans per job (README,
# "Planning"), and the subject's Python starts once. The files, their names and content are those of
# the one-verb rules this replaces (place_segmentation, lesions, qc, evaluate). A subject whose chunk
# did not segment it fails here with place-segmentation's one line naming it and why; with --keep-going
# the others go on.
#
# Two rules, as only test subjects have a metrics file: finish_test_subject (test subjects: + evaluate)
# and finish_subject (predict subjects). Each is defined only when the cohort has such subjects. When
# both are, the lesion table of a subject matches both; the ruleorder tries finish_test_subject first,
# whose reference input of a predict subject is a path nothing makes, so Snakemake takes finish_subject.
# (A {subject} constraint listing the test subjects would say it directly but costs Snakemake a regular
# expression of every test subject per job: README, "Planning".)

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
# (at least two steps: always `wmhflow steps`, which the evaluate words below extend)
FINISH_SHELL = wmhflow_shell(*FINISH_STEPS, more_words="{params.evaluate:q}")


# A test subject's last step, `:: evaluate ...`, comes as words of a params function: Snakemake reads a
# shell: line when the job runs, by then a loop variable of this file has its last value, so both rules
# share one shell line and differ in this param only ([] for finish_subject).
EVALUATE_OPTIONS = PLAN.subject_options("subject", "session", "site", "split")


def evaluate_step(wildcards, input, output):
    mask = output.mask if CHUNKED else input.mask
    words = ["::", "evaluate", "--reference", input.reference, "--prediction", mask, *EVALUATE_OPTIONS(wildcards)]
    return [*words, "--model", MODEL, "--output", output.metrics]


FINISH_RULES = [
    (name, evaluated)
    for name, evaluated, splits in (("finish_test_subject", True, ("test",)), ("finish_subject", False, ("predict",)))
    if PLAN.subjects_in(*splits)
]
if len(FINISH_RULES) == 2:

    ruleorder: finish_test_subject > finish_subject


# Chunked, the input is only the chunk's table: a chunk job run again (a fixed subject, a changed setting
# or model) places its subjects again (hard links of the cached files: no segmentation), and their lesion
# tables, QC pictures and evaluation are made again. (Not ancient(): when the chunk job has to run,
# Snakemake 9.27 does not look at the downstream jobs' own reasons, so a subject whose setting changed
# would keep its old files.)
for FINISH_RULE, EVALUATED in FINISH_RULES:

    rule:
        name:
            FINISH_RULE
        input:
            **(dict(status=PLAN.chunk_status_of) if CHUNKED else dict(mask=PLAN.mask(), probseg=PLAN.probseg())),
            **(dict(reference=PLAN.test_reference) if EVALUATED else {}),
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
            **(dict(metrics=out("{subject}", "metrics", ".tsv", desc=MODEL)) if EVALUATED else {}),
            lesions=out("{subject}", "lesions", ".tsv", desc=MODEL),
            qc=report(
                out("{subject}", "qc", ".png", desc=MODEL),
                caption="../report/qc.rst",
                category="QC",
                subcategory="{subject}",
                labels={"subject": "{subject}"},
            ),
        # one log and benchmark folder for both rules: a subject's finishing job is where users look
        log:
            model_log("finish_subject"),
        benchmark:
            model_bench("finish_subject")
        conda:
            "../../envs/report.yaml"
        # the larger of its steps' sizes (lesions and evaluate 2,000 MB, qc 1,000), their minutes added
        # up (5 + 5 + 5 for evaluate)
        resources:
            mem_mb=2000,
            runtime=15 if EVALUATED else 10,
        params:
            **(dict(staging=PLAN.chunk_staging()) if CHUNKED else {}),
            subject_options=PLAN.subject_options("subject", "session"),
            qc_options=PLAN.qc_options,
            slices=config["report"]["qc_slices"],
            evaluate=evaluate_step if EVALUATED else [],
        shell:
            FINISH_SHELL
