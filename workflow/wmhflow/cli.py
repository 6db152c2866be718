"""The ``wmhflow`` command: one verb per job, each implemented by one module.

A verb module provides ``add_arguments(parser)`` and ``main(args) -> int``; it is imported only
when its verb runs, so ``wmhflow evaluate`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import WmhflowError

#: verb -> (module, one-line help). Add a verb with a one-line edit here.
VERBS = {
    "synth": ("wmhflow.synth", "write a realistic synthetic cohort (demo and tests)"),
    "discover": ("wmhflow.cohort", "list the subjects of a cohort as a TSV (layout, splits, checks)"),
    "check": ("wmhflow.checks", "read and check one subject's images before any compute (the workflow's first step)"),
    "align-t1": ("wmhflow.preprocess.align", "put the T1 on the FLAIR's voxel grid (rigid registration if needed)"),
    "bias-correct": ("wmhflow.preprocess.bias", "N4 bias-field correction inside a head mask"),
    "requantize": ("wmhflow.preprocess.quantize", "requantize a volume to 8 bits (robust window in the head)"),
    "tophat": ("wmhflow.preprocess.tophat", "per-slice area-opening top-hat of an 8-bit FLAIR"),
    "train": ("wmhflow.fcn.train", "train the VGG16-FCN on preprocessed training subjects"),
    "infer": ("wmhflow.fcn.infer", "run the FCN on one preprocessed subject: probability map and mask"),
    "infer-batch": (
        "wmhflow.fcn.infer_batch",
        "run the FCN on a chunk of subjects in one job (segment.subjects_per_job)",
    ),
    "place-segmentation": ("wmhflow.staging", "put one subject's segmentation from its chunk job at its final paths"),
    "preprocess-batch": (
        "wmhflow.preprocess.batch",
        "preprocess a chunk of subjects in one job, one status row each (preprocess.jobs: per_chunk)",
    ),
    "steps": (
        "wmhflow.steps",
        "run several verbs one after another in this one process (VERB ARGS :: VERB ARGS ...)",
    ),
    "segment": ("wmhflow.segment", "whole chain for one subject without Snakemake: FLAIR + T1 -> WMH mask"),
    "evaluate": ("wmhflow.evaluation.evaluate", "score a segmentation against a reference, the WMH challenge's way"),
    "lesions": ("wmhflow.evaluation.lesions", "one row per 26-connected lesion of a mask"),
    "aggregate": ("wmhflow.report.aggregate", "cohort tables: metrics, per-site summary, lesion volumes"),
    "plot": ("wmhflow.report.plots", "box plots of each metric per site"),
    "status": ("wmhflow.status", "per-subject status of a run: finished, failed (at which step, why), blocked"),
    "qc": ("wmhflow.report.qc", "QC picture of a subject's segmentation over its FLAIR"),
}


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wmhflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"wmhflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (_, help_text) in VERBS.items():
        sub.add_parser(verb, help=help_text, add_help=False)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the top level first, then hand the rest to the verb's own parser (imported lazily).
    top, rest = parser.parse_known_args(argv)
    if top.verb is None:
        parser.print_help()
        return 2
    _configure_logging(top.verbose)
    return run_verb(top.verb, rest)


def call_verb(verb: str, argv: list[str]) -> int:
    """Run one verb with its own arguments; its exit code. A WmhflowError is raised (preprocess-batch
    records it as the subject's reason); :func:`run_verb` prints it."""
    module_name, help_text = VERBS[verb]
    verb_parser = argparse.ArgumentParser(prog=f"wmhflow {verb}", description=help_text)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"wmhflow {verb}: not available in this installation", file=sys.stderr)
            return 2
        raise
    module.add_arguments(verb_parser)
    args = verb_parser.parse_args(argv)
    return int(module.main(args) or 0)


def run_verb(verb: str, argv: list[str]) -> int:
    """Run one verb with its own arguments; its exit code (2 and one error line for a WmhflowError)."""
    try:
        return call_verb(verb, argv)
    except WmhflowError as exc:
        print(f"wmhflow {verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wmhflow {verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
