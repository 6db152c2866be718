# Shared by every rule file: config validation, the subjects table, output names (wmhflow.plan).
from wmhflow.workflow_subjects import subjects_for_workflow
from wmhflow import config as wmh_config
from wmhflow import status as wmh_status
from wmhflow.paths import PREFIX_PATTERN
from wmhflow.plan import Plan, prepare_rule_environment

prepare_rule_environment(workflow.basedir)
# Strict schema (workflow/wmhflow/schemas/config.schema.yaml + the training presets' keys), command-line
# values read as YAML: a mistake stops planning with one line naming the config key.
wmh_config.validate(config)
wmh_config.require_writable_results(config["results"])

# One row per FLAIR acquisition, indexed by its output prefix (sub-01/[ses-2/]anat/sub-01[_ses-2]):
# subject, session, site, flair, t1 and reference (may be empty), split (train | test | predict).
SUBJECTS = subjects_for_workflow(config, workdir=os.getcwd())
PLAN = Plan(config, SUBJECTS)
PLAN.require_model_source()
RESULTS = PLAN.results
MODEL = PLAN.model
# Short names the rules use.
out = PLAN.out
log = PLAN.log
bench = PLAN.bench
model_log = PLAN.model_log
model_bench = PLAN.model_bench
subject_file = subject_value = PLAN.subject_column  # raw files as inputs, other columns as params
subjects_in = PLAN.subjects_in


# Snakemake's own start hook: the BIDS dataset files exist before any job writes a sidecar (whose
# Sources name the input cohort through dataset_description.json), and a dry run writes nothing.
onstart:
    PLAN.write_dataset_files(config["cohort"] if config["cohort"] != "demo" else config["demo"]["path"])
    if config["model"]["checkpoint"]:  # here, not at parsing: every job parses, and this imports torch
        from wmhflow.fcn.infer import require_checkpoint_window

        require_checkpoint_window(config["model"]["checkpoint"], config["requantize"]["window"])


# {subject}: an acquisition's output prefix, folders included (wmhflow.paths.prefix).
wildcard_constraints:
    subject=PREFIX_PATTERN,
    model="[A-Za-z0-9]+",
