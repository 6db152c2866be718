# FCN inference per subject (a GPU rule): probability map and mask on the FLAIR's grid.


rule segment:
    input:
        flair=out("{subject}", "FLAIR", desc="quant"),
        t1=PLAN.fcn_input("t1"),
        tophat=out("{subject}", "FLAIR", desc="tophat"),
        model=PLAN.model_file(),
    output:
        probseg=PLAN.probseg(),
        mask=PLAN.mask(),
    params:
        device=config["segment"]["device"],
        precision=config["segment"]["precision"],
        batch_size=config["segment"]["batch_size"],
        crop_margin=config["segment"]["crop_margin"],
        threshold=config["segment"]["threshold"],
    threads: config["segment"]["threads"]
    resources:
        gpu=1,
        mem_mb=config["segment"]["mem_mb"],
        runtime=config["segment"]["runtime"],
    conda:
        "../../envs/torch.yaml"
    log:
        log(f"segment_{MODEL}"),
    benchmark:
        bench(f"segment_{MODEL}")
    shell:
        "wmhflow infer --flair {input.flair} --t1 {input.t1} --tophat {input.tophat} "
        "--model {input.model} --probseg {output.probseg} --mask {output.mask} "
        "--device {params.device} --precision {params.precision} --batch-size {params.batch_size} "
        "--crop-margin {params.crop_margin} --threshold {params.threshold} --threads {threads} > {log} 2>&1"
