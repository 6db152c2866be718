# Training the FCN on the 'train' subjects (a GPU rule), unless config model.checkpoint names a model.
import json


rule train:
    input:
        flair=PLAN.training_inputs("flair"),
        t1=PLAN.training_inputs("t1"),
        tophat=PLAN.training_inputs("tophat"),
        reference=PLAN.training_inputs("reference"),
    output:
        model=PLAN.model_output("model"),
        config=PLAN.model_output("config"),
        log_tsv=PLAN.model_output("log"),
        curve=report(
            PLAN.model_output("curve"),
            caption="../report/loss_curve.rst",
            category="Training",
        ),
    log:
        PLAN.train_log(),
    benchmark:
        PLAN.cohort_bench("train")
    conda:
        "../../envs/torch.yaml"
    threads: config["train"]["threads"]
    resources:
        gpu=1,
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime"],
    params:
        config_json=lambda wildcards: json.dumps({"model": config["model"], "train": config["train"]}),
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        device=config["train"]["device"],
    shell:
        "wmhflow train --flair {input.flair:q} --t1 {input.t1:q} --tophat {input.tophat:q} "
        "--reference {input.reference:q} --config-json {params.config_json:q} "
        "--out-dir {params.out_dir:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"
