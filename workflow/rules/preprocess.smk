# Per-subject preprocessing (paper §2.2): T1 onto the FLAIR grid, N4, 8 bits, area-opening top-hat.


rule align_t1:
    input:
        flair=subject_file("flair"),
        t1=subject_file("t1"),
        checked=PLAN.check_file(),
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
        "wmhflow align-t1 --flair {input.flair:q} --t1 {input.t1:q} --output {output:q} "
        "--mode {params.mode:q} --threads {threads} > {log:q} 2>&1"



rule bias_correct:
    input:
        image=PLAN.n4_input,
        checked=PLAN.check_file(),
    output:
        out("{subject}", "{modality}", desc="n4"),
    params:
        shrink=config["bias_correction"]["shrink"],
        iterations=config["bias_correction"]["iterations"],
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
        "wmhflow bias-correct --input {input.image:q} --output {output:q} --role {wildcards.modality} "
        "--shrink {params.shrink:q} --iterations {params.iterations:q} "
        "--control-points {params.control_points:q} --threads {threads} > {log:q} 2>&1"


rule requantize:
    input:
        out("{subject}", "{modality}", desc="n4"),
    output:
        out("{subject}", "{modality}", desc="quant"),
    params:
        window=config["requantize"]["window"],
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
        "wmhflow requantize --input {input:q} --output {output:q} --role {wildcards.modality} "
        "--window {params.window:q} --low-pct {params.low:q} --high-pct {params.high:q} > {log:q} 2>&1"


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
        "wmhflow tophat --input {input:q} --output {output:q} --area {params.area:q} "
        "--connectivity {params.connectivity:q} > {log:q} 2>&1"
