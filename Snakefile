# wmhflow: WMH segmentation after Xu et al. (MICCAI WMH Challenge 2017), per subject and per cohort.
# Run: snakemake --cores all   (default config.yaml: the built-in demo cohort)
import gc
import os

from snakemake.utils import min_version

# Planning keeps every job and file name alive to the end: with the collector's default thresholds (700
# allocations) it rescans those millions of objects again and again, 13 % of `snakemake -n` at 5,000
# subjects (README, "Planning"). What is alive now (Snakemake itself) is never collected anyway.
gc.freeze()
gc.set_threshold(100_000, 20, 100)

min_version("9.21")


configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/step_commands.smk"


# preprocess.jobs: a subject's check and preprocessing steps in one job, or one job per step; per_chunk:
# one job per segmentation chunk, and one per subject for the others (training, validation)
if PLAN.preprocess_per_subject:

    include: "workflow/rules/preprocess_subject.smk"

else:

    include: "workflow/rules/check.smk"
    include: "workflow/rules/preprocess.smk"


if PLAN.preprocess_per_chunk:

    include: "workflow/rules/preprocess_batch.smk"


include: "workflow/rules/model.smk"


# segment.subjects_per_job: one infer job per subject, or one infer_batch job per chunk of subjects (docs/cluster.md §7)
if PLAN.subjects_per_job == 1:

    include: "workflow/rules/infer.smk"

else:

    include: "workflow/rules/infer_batch.smk"


include: "workflow/rules/finish_subject.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    # the few names whose jobs pull in every target (Plan.all_rule_inputs), not every target's name
    input:
        PLAN.all_rule_inputs(),


rule preprocess:
    """Only the per-subject preprocessing (aligned, N4, 8-bit, top-hat) of every subject."""

    # a function: the ~6 names a subject are then built only when this rule is the target, not
    # parsed into Snakemake's file objects on every call (a few seconds at 10,000 subjects)
    input:
        lambda wildcards: PLAN.preprocess_rule_inputs(),


# after the last rule: each input/params/resource function is inspected once, not in every job
include: "workflow/rules/inspect_once.smk"


inspect_rule_functions_once(workflow.rules)


# a profile's per-rule settings must name rules that exist (Snakemake would ignore them silently)
wmh_config.check_rule_names(
    {
        **{name: "set-resources" for name in workflow.resource_settings.overwrite_resources},
        **{name: "set-threads" for name in workflow.resource_settings.overwrite_threads},
        **{name: "groups" for name in workflow.group_settings.overwrite_groups},
    },
    [rule.name for rule in workflow.rules],
)


# When a run ends: group/status.tsv (per subject: done, failed at which step and why, blocked, incomplete),
# and the subjects that did not finish printed here, where the user looks.
onsuccess:
    wmh_status.write_status(PLAN)


onerror:
    wmh_status.write_status(PLAN)
