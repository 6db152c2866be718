# FCN inference per subject (a GPU rule): probability map and mask on the FLAIR's grid.


rule segment:
    input:
        flair=out("{subject}", "FLAIR", desc="quant"),
        t1=out("{subject}", "T1w", desc="quant"),
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
        "wmhflow infer --flair {input.flair:q} --t1 {input.t1:q} --tophat {input.tophat:q} "
        "--model {input.model:q} --probseg {output.probseg:q} --mask {output.mask:q} "
        "--device {params.device:q} --precision {params.precision:q} --batch-size {params.batch_size:q} "
        "--crop-margin {params.crop_margin:q} --threshold {params.threshold:q} --threads {threads} > {log:q} 2>&1"
