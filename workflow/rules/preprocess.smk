# Per-subject preprocessing (paper §2.2): T1 onto the FLAIR grid, N4, 8 bits, area-opening top-hat.


rule align_t1:
    input:
        flair=subject_file("flair"),
        t1=subject_file("t1"),
    output:
        out("{subject}", "T1w", desc="aligned"),
    params:
        mode=config["align"]["mode"],
    threads: 2
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/preprocess.yaml"
    log:
        log("align_t1"),
    benchmark:
        bench("align_t1")
    shell:
        "wmhflow align-t1 --flair {input.flair} --t1 {input.t1} --output {output} "
        "--mode {params.mode} --threads {threads} > {log} 2>&1"



rule bias_correct:
    input:
        PLAN.n4_input,
    output:
        out("{subject}", "{modality}", desc="n4"),
    params:
        shrink=" ".join(map(str, config["bias_correction"]["shrink"])),
        iterations=" ".join(map(str, config["bias_correction"]["iterations"])),
        control_points=config["bias_correction"]["control_points"],
    wildcard_constraints:
        modality="FLAIR|T1w",
    threads: 2
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        "../../envs/preprocess.yaml"
    log:
        log("bias_correct_{modality}"),
    benchmark:
        bench("bias_correct_{modality}")
    shell:
        "wmhflow bias-correct --input {input} --output {output} --role {wildcards.modality} "
        "--shrink {params.shrink} --iterations {params.iterations} "
        "--control-points {params.control_points} --threads {threads} > {log} 2>&1"


rule requantize:
    input:
        out("{subject}", "{modality}", desc="n4"),
    output:
        out("{subject}", "{modality}", desc="quant"),
    params:
        low=config["requantize"]["low_percentile"],
        high=config["requantize"]["high_percentile"],
    wildcard_constraints:
        modality="FLAIR|T1w",
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/preprocess.yaml"
    log:
        log("requantize_{modality}"),
    benchmark:
        bench("requantize_{modality}")
    shell:
        "wmhflow requantize --input {input} --output {output} --role {wildcards.modality} "
        "--low-pct {params.low} --high-pct {params.high} > {log} 2>&1"


rule tophat:
    input:
        out("{subject}", "FLAIR", desc="quant"),
    output:
        out("{subject}", "FLAIR", desc="tophat"),
    params:
        area=config["tophat"]["area"],
        connectivity=config["tophat"]["connectivity"],
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/preprocess.yaml"
    log:
        log("tophat"),
    benchmark:
        bench("tophat")
    shell:
        "wmhflow tophat --input {input} --output {output} --area {params.area} "
        "--connectivity {params.connectivity} > {log} 2>&1"
