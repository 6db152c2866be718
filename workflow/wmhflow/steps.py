"""Several verbs in one process: ``wmhflow steps check ... :: align-t1 ... :: tophat ...``.

The workflow's per-subject preprocessing job (``preprocess.jobs: per_subject``) runs a subject's check,
alignment, N4, 8-bit requantization and top-hat this way: the same verbs with the same arguments as the
one-job-per-step rules, hence the same files, but one Python start and one set of imports instead of
seven, and one Snakemake job to plan instead of seven (benchmarks/results/workflow_overhead.csv).

Steps run in the order given; the first that fails stops the rest, and its exit code and one-line
error (``wmhflow <verb>: error: ...``) are the job's. Each step's time is logged.
"""

from __future__ import annotations

import logging
import time

from .errors import WmhflowError

log = logging.getLogger(__name__)

#: separates one step's words from the next one's (a file path is never exactly this)
SEPARATOR = "::"


def split_steps(words: list[str]) -> list[list[str]]:
    """``[verb, args..., '::', verb, args...]`` -> one word list per step; empty steps are an error."""
    steps, current = [], []
    for word in words:
        if word == SEPARATOR:
            steps.append(current)
            current = []
        else:
            current.append(word)
    steps.append(current)
    if not any(steps) or not all(steps):
        raise WmhflowError(f"give one or more steps, VERB ARGS, separated by '{SEPARATOR}'")
    return steps


def run_steps(words: list[str]) -> int:
    from .cli import VERBS, run_verb

    steps = split_steps(words)
    for verb, *_ in steps:
        if verb not in VERBS or verb == "steps":
            raise WmhflowError(f"'{verb}' is not a verb steps can run (wmhflow --help lists them)")
    for number, (verb, *argv) in enumerate(steps, 1):
        started = time.perf_counter()
        code = run_verb(verb, argv)
        if code != 0:
            log.error("step %d of %d (%s) failed; the steps after it did not run", number, len(steps), verb)
            return code
        log.info("step %d of %d (%s) done in %.2f s", number, len(steps), verb, time.perf_counter() - started)
    return 0


def add_arguments(parser) -> None:
    import argparse

    parser.add_argument("words", nargs=argparse.REMAINDER, help=f"VERB ARGS [{SEPARATOR} VERB ARGS ...]")


def main(args) -> int:
    return run_steps(args.words)
