# Training the FCN on the 'train' subjects (a GPU rule), unless a model file is given.
import json

MODEL = config["model"]["name"]
MODEL_DIR = f"{RESULTS}/models/{MODEL}"


def model_file():
    """The model the segment rule uses: config model.checkpoint, or the one trained here."""
    return config["model"]["checkpoint"] or f"{MODEL_DIR}/model.pt"


def model_targets():
    if config["model"]["checkpoint"]:
        return []
    return [f"{MODEL_DIR}/model.pt", f"{MODEL_DIR}/training_log.tsv", f"{MODEL_DIR}/loss_curve.png"]


def _training_inputs(kind):
    train = subjects_in("train")
    if kind == "reference":
        return [SUBJECTS.loc[s, "reference"] for s in train]
    suffix, desc = {"flair": ("FLAIR", "quant"), "t1": ("T1w", "quant"), "tophat": ("FLAIR", "tophat")}[kind]
    return [out(s, suffix, desc=desc) for s in train]


rule train:
    input:
        flair=_training_inputs("flair"),
        t1=_training_inputs("t1"),
        tophat=_training_inputs("tophat"),
        reference=_training_inputs("reference"),
    output:
        model=f"{MODEL_DIR}/model.pt",
        config=f"{MODEL_DIR}/config.yaml",
        log_tsv=f"{MODEL_DIR}/training_log.tsv",
        curve=report(
            f"{MODEL_DIR}/loss_curve.png",
            caption="../report/loss_curve.rst",
            category="Training",
        ),
    params:
        config_json=lambda wildcards: json.dumps(
            {"model": config["model"], "train": config["train"]}
        ),
        out_dir=MODEL_DIR,
        device=config["train"]["device"],
    threads: config["train"]["threads"]
    resources:
        gpu=1,
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime"],
    log:
        f"{RESULTS}/logs/train/{MODEL}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{MODEL}.tsv"
    shell:
        "wmhflow train --flair {input.flair} --t1 {input.t1} --tophat {input.tophat} "
        "--reference {input.reference} --config-json '{params.config_json}' "
        "--out-dir {params.out_dir} --device {params.device} --threads {threads} > {log} 2>&1"
