# segment.subjects_per_job > 1 (docs/cluster.md §7), included by the Snakefile instead of infer.smk:
# rule infer_batch (`wmhflow infer-batch`), one GPU job per chunk of subjects (wmhflow.plan:
# Plan.segment_chunks), writes the chunk's status table and stages each subject's files. It declares
# only the table: Snakemake deletes every output of a failed job, so one bad subject would take its
# chunk-mates' files with it. Each subject's own job, finish_subject (finish_subject.smk), places them
# at the paths infer.smk's rule writes (or fails naming the subject and why, so --keep-going finishes
# the others).
#
# preprocess.jobs: per_chunk: the chunk's input is its preprocess_batch table (preprocess_batch.smk), the
# 8-bit files (no rule declares them) are params, and a subject whose preprocessing failed gets a failed
# row with that reason. Only then do the shell: line's words differ (a changed template would rerun
# every chunk of the other modes).

FCN_FILES = "params" if PLAN.preprocess_per_chunk else "input"  # where the 8-bit files are named
CHUNK_FCN_FILES = dict(flair=PLAN.chunk_files("flair"), t1=PLAN.chunk_files("t1"), tophat=PLAN.chunk_files("tophat"))


rule infer_batch:
    input:
        **(dict(preprocessed=PLAN.preprocess_chunk_status()) if PLAN.preprocess_per_chunk else CHUNK_FCN_FILES),
        model=PLAN.model_file(),
    output:
        status=PLAN.chunk_status(),
    log:
        model_log("infer_batch", "{chunk}"),
    benchmark:
        model_bench("infer_batch", "{chunk}")
    wildcard_constraints:
        chunk="chunk-[0-9]+",
    conda:
        "../../envs/torch.yaml"
    threads: config["segment"]["threads"]
    resources:
        gpu=1,
        mem_mb=config["segment"]["mem_mb"],
        runtime=lambda wildcards: config["segment"]["runtime"] * len(PLAN.segment_chunks[wildcards.chunk]),
    params:
        **(CHUNK_FCN_FILES if PLAN.preprocess_per_chunk else {}),
        subjects=PLAN.chunk_files("subject"),
        probseg=PLAN.chunk_files("probseg"),
        mask=PLAN.chunk_files("mask"),
        staging=PLAN.chunk_staging(),
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
        f"wmhflow infer-batch --subjects {{params.subjects:q}} --flair {{{FCN_FILES}.flair:q}} --t1 {{{FCN_FILES}.t1:q}} "
        f"--tophat {{{FCN_FILES}.tophat:q}} --probseg {{params.probseg:q}} --mask {{params.mask:q}} "
        "--model {input.model:q} --staging {params.staging:q} --status {output.status:q} "
        "--device {params.device:q} --precision {params.precision:q} --batch-size {params.batch_size:q} "
        "--crop-margin {params.crop_margin:q} --threshold {params.threshold:q} --tta {params.tta:q} "
        "--min-lesion-mm3 {params.min_lesion_mm3:q} --min-depth-mm {params.min_depth_mm:q} "
        "--restrict-to {params.restrict_to:q} "
        + ("--preprocessed {input.preprocessed:q} " if PLAN.preprocess_per_chunk else "")
        + "--threads {threads} > {log:q} 2>&1"
