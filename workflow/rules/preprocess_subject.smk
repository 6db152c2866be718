# preprocess.jobs: per_subject (the default). One job per subject runs its check, T1 alignment, N4, 8-bit
# requantization and top-hat (`wmhflow steps`: the command lines step_commands.smk defines for check.smk's
# and preprocess.smk's rules, in one process), writing the same files as those rules. A bad subject stops
# at its check, the first step, before any compute, with one line per problem in this rule's log.

T1_STEPS = PLAN.needs_t1  # FLAIR-only channel sets (flair-3slice) have no T1 steps
MODALITIES = [("flair", "FLAIR", "input.flair")] + ([("t1", "T1w", "output.t1_aligned")] if T1_STEPS else [])
PREPROCESS_STEPS = [
    check_step("input.flair", "input.t1", "output.checked"),
    *([align_t1_step("input.flair", "input.t1", "output.t1_aligned")] if T1_STEPS else []),
    *(
        step
        for key, role, source in MODALITIES
        for step in (
            bias_correct_step(source, f"output.{key}_n4", role=role),
            requantize_step(f"output.{key}_n4", f"output.{key}_quant", role=role),
        )
    ),
    tophat_step("output.flair_quant", "output.tophat"),
]
# The rule's inputs and outputs by name, also for preprocess_batch.smk (per_chunk), which runs these steps
# for each subject of a chunk and writes these files.
PREPROCESS_INPUTS = dict(
    flair=subject_file("flair"),
    t1=subject_file("t1") if T1_STEPS else PLAN.optional_subject_file("t1"),
)
PREPROCESS_OUTPUTS = dict(
    **(
        dict(
            t1_aligned=out("{subject}", "T1w", desc="aligned"),
            t1_n4=out("{subject}", "T1w", desc="n4"),
            t1_quant=out("{subject}", "T1w", desc="quant"),
        )
        if T1_STEPS
        else {}
    ),
    checked=PLAN.check_file(),
    flair_n4=out("{subject}", "FLAIR", desc="n4"),
    flair_quant=out("{subject}", "FLAIR", desc="quant"),
    tophat=out("{subject}", "FLAIR", desc="tophat"),
)


rule preprocess_subject:
    input:
        **PREPROCESS_INPUTS,
    output:
        **PREPROCESS_OUTPUTS,
    log:
        log("preprocess_subject"),
    benchmark:
        bench("preprocess_subject")
    conda:
        "../../envs/preprocess.yaml"
    # preprocess.threads (default 1), as the per-step rules: N4 and the registration get it on their
    # command line (step_commands.smk), so both modes write the same files under any profile.
    threads: KERNEL_THREADS
    # Memory: the largest of its steps' sizes (they run one after another; N4's 1,000 MB, from measured
    # peaks: docs/cluster.md, "Job sizes"); minutes: the steps' runtimes added up (5 + 10 + 4 x 5 + 5).
    resources:
        mem_mb=1000,
        runtime=40,
    params:
        **ALL_STEP_PARAMS,
    shell:
        wmhflow_shell(*PREPROCESS_STEPS)
