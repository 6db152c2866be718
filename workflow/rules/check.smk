# First step of every subject: read and check its images (wmhflow check). Every other rule of the
# subject depends on the check file, so a bad subject stops here, before any compute, with one line
# per problem in its log (and in the terminal: show-failed-logs); with --keep-going the others go on.


rule check_subject:
    input:
        flair=subject_file("flair"),
        t1=PLAN.optional_subject_file("t1"),
    output:
        PLAN.check_file(),
    log:
        log("check_subject"),
    benchmark:
        bench("check_subject")
    conda:
        "../../envs/preprocess.yaml"
    # Resources from measured peaks (benchmarks/results/resources.csv; docs/cluster.md, "Job sizes"):
    # 69 MB + 24 MB per Mvoxel of the FLAIR, sized for 256^3 (16.8 Mvoxels) x 1.5; minutes: 5 at least.
    resources:
        mem_mb=800,
        runtime=5,
    params:
        **STEP_PARAMS["check"],
    shell:
        wmhflow_shell(check_step("input.flair", "input.t1", "output"))
