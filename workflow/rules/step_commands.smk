# One definition of each preprocessing step's `wmhflow` command line and its params, shared by both rule
# sets: the per-step rules (check.smk, preprocess.smk) run one step each, preprocess_subject.smk joins them
# with ' :: ' into one `wmhflow steps` call. A changed flag is made here once, so the two modes cannot drift
# (tests/test_steps.py compares their outputs voxel for voxel). Arguments name the rule's placeholders,
# e.g. "input.flair" or "output.flair_n4"; role is a placeholder or a literal ("FLAIR").

STEP_PARAMS = {
    "check": dict(reference=subject_value("reference")),
    "align_t1": dict(mode=config["align"]["mode"]),
    "bias_correct": dict(
        shrink=config["bias_correction"]["shrink"],
        iterations=config["bias_correction"]["iterations"],
        control_points=config["bias_correction"]["control_points"],
    ),
    "requantize": dict(
        window=config["requantize"]["window"],
        low=config["requantize"]["low_percentile"],
        high=config["requantize"]["high_percentile"],
    ),
    "tophat": dict(area=config["tophat"]["area"], connectivity=config["tophat"]["connectivity"]),
}
# N4's and the registration's thread count, part of the command and not {threads}: their voxels depend on
# it, so a profile's set-threads (the CPUs a job asks for) must not change the files (config.yaml).
KERNEL_THREADS = config["preprocess"]["threads"]
# Every step's params at once, for preprocess_subject; the names must not clash across steps.
ALL_STEP_PARAMS = {key: value for step_params in STEP_PARAMS.values() for key, value in step_params.items()}
assert len(ALL_STEP_PARAMS) == sum(map(len, STEP_PARAMS.values())), "a params name is used by two steps"


def check_step(flair, t1, output):
    return (
        f"check --subject {{wildcards.subject}} --flair {{{flair}:q}} --t1={{{t1}:q}} "
        f"--reference={{params.reference:q}} --output {{{output}:q}}"
    )


def align_t1_step(flair, t1, output):
    return (
        f"align-t1 --flair {{{flair}:q}} --t1 {{{t1}:q}} --output {{{output}:q}} "
        f"--mode {{params.mode:q}} --threads {KERNEL_THREADS}"
    )


def bias_correct_step(image, output, role):
    return (
        f"bias-correct --input {{{image}:q}} --output {{{output}:q}} --role {role} "
        "--shrink {params.shrink:q} --iterations {params.iterations:q} "
        f"--control-points {{params.control_points:q}} --threads {KERNEL_THREADS}"
    )


def requantize_step(image, output, role):
    return (
        f"requantize --input {{{image}:q}} --output {{{output}:q}} --role {role} "
        "--window {params.window:q} --low-pct {params.low:q} --high-pct {params.high:q}"
    )


def tophat_step(image, output):
    return (
        f"tophat --input {{{image}:q}} --output {{{output}:q}} "
        "--area {params.area:q} --connectivity {params.connectivity:q}"
    )


def wmhflow_shell(*steps, more_words=""):
    """The shell: line running one step (`wmhflow VERB ...`) or several in one process (`wmhflow steps ...`).

    ``more_words``: a placeholder for words a job adds at the end (finish_subject.smk: a test subject's
    `:: evaluate ...`), before the log redirection."""
    command = steps[0] if len(steps) == 1 else "steps " + " :: ".join(steps)
    return "wmhflow " + command + (f" {more_words}" if more_words else "") + " > {log:q} 2>&1"
