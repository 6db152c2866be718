# Per-subject preprocessing (paper §2.2): T1 onto the FLAIR grid, N4, 8 bits, area-opening top-hat.


rule align_t1:
    input:
        flair=subject_file("flair"),
        t1=subject_file("t1"),
        checked=PLAN.check_file(),
    output:
        out("{subject}", "T1w", desc="aligned"),
    log:
        log("align_t1"),
    benchmark:
        bench("align_t1")
    conda:
        "../../envs/preprocess.yaml"
    threads: KERNEL_THREADS
    # Peak RSS 147 MB + 6 MB per Mvoxel passing through (benchmarks/results/resources.csv); a registration
    # was not measured at 3D size: sized with N4's slope (26 MB per Mvoxel) at 256^3 x 1.5. Minutes:
    # registration of a 3D T1 takes longer than a pass-through; 10 leaves room on a slow node.
    resources:
        mem_mb=900,
        runtime=10,
    params:
        **STEP_PARAMS["align_t1"],
    shell:
        wmhflow_shell(align_t1_step("input.flair", "input.t1", "output"))


rule bias_correct:
    input:
        image=PLAN.n4_input,
        checked=PLAN.check_file(),
    output:
        out("{subject}", "{modality}", desc="n4"),
    log:
        log("bias_correct_{modality}"),
    benchmark:
        bench("bias_correct_{modality}")
    wildcard_constraints:
        modality="FLAIR|T1w",
    conda:
        "../../envs/preprocess.yaml"
    threads: KERNEL_THREADS
    # Peak RSS 172 MB + 26 MB per Mvoxel (benchmarks/results/resources.csv), sized for 256^3 (16.8
    # Mvoxels) x 1.5; 1.25 s per Mvoxel with 2 threads: ~1 min at 256^3, x2 with preprocess.threads 1 (default)
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        **STEP_PARAMS["bias_correct"],
    shell:
        wmhflow_shell(bias_correct_step("input.image", "output", role="{wildcards.modality}"))


rule requantize:
    input:
        out("{subject}", "{modality}", desc="n4"),
    output:
        out("{subject}", "{modality}", desc="quant"),
    log:
        log("requantize_{modality}"),
    benchmark:
        bench("requantize_{modality}")
    wildcard_constraints:
        modality="FLAIR|T1w",
    conda:
        "../../envs/preprocess.yaml"
    # Peak RSS 69 MB + 21 MB per Mvoxel (benchmarks/results/resources.csv), 256^3 x 1.5; seconds of work
    resources:
        mem_mb=700,
        runtime=5,
    params:
        **STEP_PARAMS["requantize"],
    shell:
        wmhflow_shell(requantize_step("input", "output", role="{wildcards.modality}"))


rule tophat:
    input:
        out("{subject}", "FLAIR", desc="quant"),
    output:
        out("{subject}", "FLAIR", desc="tophat"),
    log:
        log("tophat"),
    benchmark:
        bench("tophat")
    conda:
        "../../envs/preprocess.yaml"
    # Peak RSS 181 MB (mostly numba) + 3 MB per Mvoxel (benchmarks/results/resources.csv), 256^3 x 1.5
    resources:
        mem_mb=400,
        runtime=5,
    params:
        **STEP_PARAMS["tophat"],
    shell:
        wmhflow_shell(tophat_step("input", "output"))
