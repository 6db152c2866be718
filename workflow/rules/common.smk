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


def inspect_rule_functions_once(rules):
    """Give every input, params and resource function of the rules its signature, computed once.

    Snakemake asks each such function for its parameters (inspect.signature) two or three times a job,
    to know whether it wants input, output, threads...: ~350,000 calls at 10,000 subjects, 5 % of
    `snakemake -n` (README, "Planning"). A function carrying them already (Snakemake's own
    overwrite_function_params, as its subpath() helper does) is not inspected again. The value is what
    Snakemake would compute, so nothing about the jobs changes. Call it after the last rule."""
    import inspect

    from snakemake.common import overwrite_function_params

    for rule in rules:
        for item in [*rule.input, *rule.params]:
            func = getattr(item, "callable", None) or (item if callable(item) else None)
            if func is None:
                continue
            parameters = inspect.signature(func).parameters  # a bound method's: without self
            # a bound method (PLAN.qc_options) takes no attributes: its function does (one Plan per run)
            overwrite_function_params(getattr(func, "__func__", func), parameters)
    # Every job's resources go the same way: its threads and the default tmpdir through the bound method
    # Resource.evaluate (*args, **kwargs), tmpdir's and infer_batch's runtime also through their function:
    # ~5 signatures a job, 4 % more of `snakemake -n` at 10,000 subjects. These are Snakemake's objects
    # (a private attribute among them), so a version that changes them only loses the gain.
    try:
        from snakemake.resources import Resource

        evaluate = inspect.signature(Resource("_cores", 1).evaluate).parameters
        evaluators = {r._evaluator for rule in rules for r in rule.resources.values() if r.is_evaluable()}
    except (ImportError, AttributeError, TypeError):
        return
    overwrite_function_params(Resource.evaluate, evaluate)  # what Snakemake asks of every bound evaluate
    for func in evaluators:
        overwrite_function_params(func, inspect.signature(func).parameters)
