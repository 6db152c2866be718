"""``wmhflow preprocess-batch``: one job preprocesses a segmentation chunk's subjects (``preprocess.jobs:
per_chunk``).

Each subject's steps are the verbs, with the arguments, that rule preprocess_subject runs for it in one
``wmhflow steps`` process (the workflow formats both from the same templates, step_commands.smk), so the
files are the same; here all subjects of a chunk run in one process, one Snakemake job. The job declares
only its status table (one row per subject: done | failed, and the one-line reason), as infer_batch does:
Snakemake deletes every declared output of a failed job, and one bad subject must not take its
chunk-mates' files with it. A subject that fails loses every file its steps write (``--output``), those
of an earlier run too, so that no stale top-hat is segmented after this run's preprocessing failed; the
chunk goes on, and the job exits 0 once the table is written (failures are rows).

Words: ``--status TABLE SUBJECT VERB ARGS [:: VERB ARGS ...] [::: SUBJECT VERB ARGS ...]``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from pathlib import Path

from ..errors import WmhflowError
from ..steps import SEPARATOR, split_steps

log = logging.getLogger(__name__)

#: separates one subject's words from the next one's (a file path is never exactly this)
SUBJECT_SEPARATOR = ":::"


def split_subjects(words: list[str]) -> list[tuple[str, list[list[str]]]]:
    """``[key, verb, args, '::', verb, args, ':::', key, ...]`` -> [(key, one word list per step)]."""
    groups, current = [], []
    for word in [*words, SUBJECT_SEPARATOR]:
        if word != SUBJECT_SEPARATOR:
            current.append(word)
            continue
        if len(current) < 2:
            raise WmhflowError(
                f"give SUBJECT VERB ARGS [{SEPARATOR} VERB ARGS ...] per subject, separated by '{SUBJECT_SEPARATOR}'"
            )
        groups.append((current[0], split_steps(current[1:])))
        current = []
    return groups


def outputs_of(steps: list[list[str]]) -> list[str]:
    """Every file the steps write: the value of each ``--output``."""
    found = []
    for words in steps:
        for i, word in enumerate(words):
            if word == "--output" and i + 1 < len(words):
                found.append(words[i + 1])
            elif word.startswith("--output="):
                found.append(word.removeprefix("--output="))
    return found


def remove(paths) -> None:
    """Remove files (and the JSON sidecar beside a NIfTI) that exist."""
    from ..paths import sidecar_path

    for path in paths:
        for each in (Path(path), sidecar_path(path) if str(path).endswith(".nii.gz") else None):
            if each is not None:
                with contextlib.suppress(FileNotFoundError):
                    each.unlink()


def run_subject(steps: list[list[str]]) -> str:
    """Run one subject's steps in order; '' when all succeeded, else the first failure's one line."""
    from ..cli import VERBS, call_verb

    for verb, *_ in steps:
        if verb not in VERBS or verb in ("steps", "preprocess-batch"):
            raise WmhflowError(f"'{verb}' is not a preprocessing verb (wmhflow --help lists them)")
    for number, (verb, *argv) in enumerate(steps, 1):
        started = time.perf_counter()
        printed = _Tee(sys.stderr)  # a verb that reports its problems itself (check: one line each)
        try:
            with contextlib.redirect_stderr(printed):
                code = call_verb(verb, argv)
        except WmhflowError as exc:
            return f"wmhflow {verb}: error: {exc}"
        except Exception as exc:  # noqa: BLE001 (unexpected, but only this subject's: as infer_batch)
            log.error("step %d of %d (%s) failed", number, len(steps), verb, exc_info=exc)
            return f"wmhflow {verb}: error: {type(exc).__name__}: {exc}"
        if code != 0:
            errors = [line for line in printed.text().splitlines() if ": error:" in line]
            more = f" (and {len(errors) - 1} more problem(s): see the log)" if len(errors) > 1 else ""
            return errors[0] + more if errors else f"wmhflow {verb}: error: exit code {code}"
        log.info("step %d of %d (%s) done in %.2f s", number, len(steps), verb, time.perf_counter() - started)
    return ""


class _Tee(io.TextIOBase):
    """Writes to ``stream`` (the job's log) and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text):
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()

    def text(self) -> str:
        return self.copy.getvalue()


def run_chunk(subjects: list[tuple[str, list[list[str]]]], status_path) -> list[dict]:
    """Preprocess each subject; write the chunk's status table (atomically); return its rows."""
    from ..paths import prefix_label
    from ..staging import write_status

    rows = []
    for key, steps in subjects:
        started = time.perf_counter()
        outputs = outputs_of(steps)
        remove(outputs)  # no file of an earlier run survives this one's
        reason = run_subject(steps)
        seconds = round(time.perf_counter() - started, 2)
        if reason:
            remove(outputs)
            log.error("%s: failed in %.1f s: %s", prefix_label(key), seconds, reason)
        else:
            log.info("%s: done in %.1f s", prefix_label(key), seconds)
        rows.append({"subject": key, "status": "failed" if reason else "done", "error": reason, "seconds": seconds})
    write_status(status_path, rows)
    failed = [r for r in rows if r["status"] == "failed"]
    log.info(
        "chunk done: %d preprocessed, %d failed%s",
        len(rows) - len(failed),
        len(failed),
        "".join(f"\n  {prefix_label(r['subject'])}: {r['error']}" for r in failed),
    )
    return rows


def add_arguments(parser) -> None:
    import argparse

    parser.add_argument("--status", required=True, help="output: the chunk's status table (TSV)")
    parser.add_argument(
        "words",
        nargs=argparse.REMAINDER,
        help=f"SUBJECT VERB ARGS [{SEPARATOR} VERB ARGS ...] [{SUBJECT_SEPARATOR} ...]",
    )


def main(args) -> int:
    run_chunk(split_subjects(args.words), args.status)
    return 0
