# FCN inference per subject (a GPU rule; `wmhflow infer`): probability map and mask on the FLAIR's
# grid, and the mask's JSON sidecar (threshold used, flips, models of an ensemble, post-processing).


rule infer:
    input:
        flair=PLAN.fcn_input("flair"),
        t1=PLAN.fcn_input("t1"),
        tophat=PLAN.fcn_input("tophat"),
        model=PLAN.model_file(),
    output:
        probseg=PLAN.probseg(),
        mask=PLAN.mask(),
        sidecar=PLAN.mask_sidecar(),
    log:
        model_log("infer"),
    benchmark:
        model_bench("infer")
    conda:
        "../../envs/torch.yaml"
    threads: config["segment"]["threads"]
    resources:
        gpu=1,
        mem_mb=config["segment"]["mem_mb"],
        runtime=config["segment"]["runtime"],
    params:
        device=config["segment"]["device"],
        precision=config["segment"]["precision"],
        batch_size=config["segment"]["batch_size"],
        crop_margin=config["segment"]["crop_margin"],
        threshold=PLAN.segment_params()["threshold"],
        tta=PLAN.segment_params()["tta"],
        min_lesion_mm3=PLAN.segment_params()["min_lesion_mm3"],
        min_depth_mm=PLAN.segment_params()["min_depth_mm"],
        restrict_to=PLAN.segment_params()["restrict_to"],
    shell:
        "wmhflow infer --flair {input.flair:q} --t1 {input.t1:q} --tophat {input.tophat:q} "
        "--model {input.model:q} --probseg {output.probseg:q} --mask {output.mask:q} "
        "--device {params.device:q} --precision {params.precision:q} --batch-size {params.batch_size:q} "
        "--crop-margin {params.crop_margin:q} --threshold {params.threshold:q} --tta {params.tta:q} "
        "--min-lesion-mm3 {params.min_lesion_mm3:q} --min-depth-mm {params.min_depth_mm:q} "
        "--restrict-to {params.restrict_to:q} "
        "--threads {threads} > {log:q} 2>&1"
