# preprocess.jobs: per_chunk (docs/cluster.md §7), included by the Snakefile besides preprocess_subject.smk:
# rule preprocess_batch (`wmhflow preprocess-batch`), one job per segmentation chunk (the {chunk} of
# infer_batch.smk, Plan.segment_chunks), runs each subject's check and preprocessing steps in one process
# and writes their files at the paths preprocess_subject writes. Like infer_batch it declares only its
# status table (one row per subject: done | failed, and why): Snakemake deletes every output of a failed
# job, so one bad subject would take its chunk-mates' files with it. A failed subject's files are removed
# (an earlier run's too), infer_batch gives it a failed row naming the reason, and its finish_subject job
# fails with it. Subjects outside the chunks (training, validation) keep rule preprocess_subject.

import re
import shlex
from types import SimpleNamespace

from snakemake.utils import format as snakemake_format

from wmhflow.errors import ConfigError

MAX_COMMAND = 120_000  # characters: Linux's 128 KiB for one argument, less the rest of the shell: line


def preprocess_step_words():
    """preprocess_subject's steps as word lists (one per step), with a marker word (part) in place of each
    of a subject's own values: the same templates (PREPROCESS_STEPS, step_commands.smk) formatted once by
    Snakemake's own formatter, as its shell: line is; the settings (params that are not functions of the
    subject) formatted with their values. Once, not per subject: formatting and splitting 7 commands cost
    ~1.5 ms a subject, 15 s of `snakemake -n` at 10,000 subjects."""
    marker = lambda kind, name: f"@@wmhflow-{kind}-{name}@@"  # only shell-safe characters: never quoted
    markers = dict(
        wildcards=SimpleNamespace(subject=marker("wildcards", "subject")),
        input=SimpleNamespace(**{name: marker("input", name) for name in PREPROCESS_INPUTS}),
        output=SimpleNamespace(**{name: marker("output", name) for name in PREPROCESS_OUTPUTS}),
        params=SimpleNamespace(
            **{name: marker("params", name) if callable(v) else v for name, v in ALL_STEP_PARAMS.items()}
        ),
    )
    return [shlex.split(snakemake_format(step, **markers)) for step in PREPROCESS_STEPS]


STEP_WORDS = preprocess_step_words()
MARKER = re.compile(r"@@wmhflow-(wildcards|input|output|params)-(\w+)@@")


def subject_values(key) -> dict:
    """{marker: the subject's value}, as preprocess_subject's job has it: the inputs and subject params
    (functions of the wildcards), the outputs with {subject} filled in."""
    subject = SimpleNamespace(subject=key)
    values = {"@@wmhflow-wildcards-subject@@": key}
    values.update({f"@@wmhflow-input-{n}@@": f(subject) for n, f in PREPROCESS_INPUTS.items()})
    values.update({f"@@wmhflow-output-{n}@@": p.replace("{subject}", key) for n, p in PREPROCESS_OUTPUTS.items()})
    values.update({f"@@wmhflow-params-{n}@@": f(subject) for n, f in ALL_STEP_PARAMS.items() if callable(f)})
    return values


def filled(word, values) -> list[str]:
    """A word of STEP_WORDS for one subject, as Snakemake's formatter writes it: a list value as its items,
    an empty value that is the whole word as no word at all."""
    if "@@" not in word:
        return [word]
    if word in values:
        value = values[word]
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else ([str(value)] if value != "" else [])
    return [MARKER.sub(lambda found: as_text(values[found.group(0)]), word)]


def as_text(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def preprocess_batch_words(wildcards):
    """Params function: per subject of the chunk, its key and its steps' words, exactly the command lines
    preprocess_subject's shell: runs for it (tests/test_preprocess_batch.py compares them)."""
    words = []
    for key in PLAN.segment_chunks[wildcards.chunk]:
        values = subject_values(key)
        words += [":::", key] if words else [key]
        for number, step in enumerate(STEP_WORDS):
            if number:
                words.append("::")
            for word in step:
                words += filled(word, values)
    # the shell: line is one argument of `bash -c`, which Linux caps at 128 KiB (~2 KB a subject here)
    size = sum(len(shlex.quote(word)) + 1 for word in words)
    if size > MAX_COMMAND:
        members = len(PLAN.segment_chunks[wildcards.chunk])
        raise ConfigError(
            "preprocess.jobs",
            f"per_chunk: the command of {wildcards.chunk} would be {size:,} characters, over the "
            f"{MAX_COMMAND:,} one shell command may have: set segment.subjects_per_job to "
            f"{max(2, members * MAX_COMMAND // size)} or fewer",
        )
    return words


rule preprocess_batch:
    input:
        flair=PLAN.preprocess_chunk_inputs("flair"),
        t1=PLAN.preprocess_chunk_inputs("t1"),
    output:
        status=PLAN.preprocess_chunk_status(),
    log:
        log("preprocess_batch", "{chunk}"),
    benchmark:
        bench("preprocess_batch", "{chunk}")
    wildcard_constraints:
        chunk="chunk-[0-9]+",
    conda:
        "../../envs/preprocess.yaml"
    # as preprocess_subject: preprocess.threads (the files must not depend on the job's CPUs), its
    # memory, and its 40 minutes a subject
    threads: KERNEL_THREADS
    resources:
        mem_mb=1000,
        runtime=lambda wildcards: 40 * len(PLAN.segment_chunks[wildcards.chunk]),
    params:
        steps=preprocess_batch_words,
    shell:
        "wmhflow preprocess-batch --status {output.status:q} {params.steps:q} > {log:q} 2>&1"
