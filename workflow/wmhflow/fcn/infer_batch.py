"""``wmhflow infer-batch``: one job segments a chunk of subjects (``segment.subjects_per_job``).

On a GPU one subject's FCN pass takes milliseconds to seconds, while a job pays a Python start, the
torch import, CUDA initialisation and the model load (seconds). A chunk job pays them once: it loads
the model(s) once, reads the next subject's 8-bit volumes on a background thread while the current
one is segmented, and writes each subject's files (exactly those of ``wmhflow infer``) as soon as they
are ready, into the staging folder of :mod:`wmhflow.staging`. A subject that fails (an unreadable input,
another grid) is recorded in the chunk's status table with its one-line reason and the chunk goes on;
a subject whose staged files are up to date is skipped ("cached").
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .. import staging
from ..errors import ConfigError, InputError, WmhflowError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subject:
    """One subject of a chunk: its key, 8-bit inputs and final output paths."""

    key: str
    flair: str
    t1: str
    tophat: str
    probseg: str
    mask: str

    @property
    def inputs(self) -> list[str]:
        return [p for p in (self.flair, self.t1, self.tophat) if p]


def subjects_of(keys, flair, t1, tophat, probseg, mask) -> list[Subject]:
    """Zip the per-subject lists of the command line; t1 (and tophat) may be empty lists (FLAIR-only)."""
    n = len(keys)
    columns = {
        "--flair": flair,
        "--t1": t1 or [""] * n,
        "--tophat": tophat or [""] * n,
        "--probseg": probseg,
        "--mask": mask,
    }
    for flag, values in columns.items():
        if len(values) != n:
            raise ConfigError(
                f"infer-batch {flag}",
                f"{len(values)} value(s) for {n} subject(s): give one per subject, in the order of --subjects",
            )
    return [Subject(*row) for row in zip(keys, *columns.values())]


def _read(subject: Subject, model_paths, metas, channels):
    """The background thread's part: a subject's volumes, checked (grid, dtype, the models' window)."""
    from ..preprocess.quantize import inputs_window
    from .infer import require_models_window
    from .inputs import load_volumes

    volumes, flair_img = load_volumes(subject.flair, subject.t1, subject.tophat, channels)
    require_models_window(model_paths, metas, inputs_window([subject.flair, subject.t1]), subject.flair)
    return volumes, flair_img


def not_preprocessed(subjects: list[Subject], table) -> dict[str, str]:
    """{key: why} of the subjects a preprocess_batch status table (``preprocess.jobs: per_chunk``) does
    not list as done: they are not segmented (their files are gone or were never written)."""
    rows = {r["subject"]: r for r in staging.read_status(table)}
    why = {}
    for s in subjects:
        row = rows.get(s.key)
        if row is None:
            why[s.key] = f"preprocessing failed: not in {table}"
        elif row["status"] != "done":
            why[s.key] = f"preprocessing failed: {row['error']}"
    return why


def run_chunk(
    subjects: list[Subject], model_paths, settings: dict, staging_dir, status_path, writers: int = 1, preprocessed=None
) -> list[dict]:
    """Segment every subject of a chunk; write its status table; return its rows.

    Only a problem of the whole chunk (a model file that cannot be read) raises; a subject's own error
    becomes a 'failed' row and the next subject runs. ``writers``: how many subjects are post-processed
    and written side by side (:func:`write_threads`); the files do not depend on it. ``preprocessed``:
    the chunk's preprocess_batch status table, whose failed subjects get a failed row, with its reason.
    """
    rows, todo, stamps = [], [], {}
    unprocessed = not_preprocessed(subjects, preprocessed) if preprocessed else {}
    for s in subjects:
        if s.key in unprocessed:
            staging.forget(staging_dir, s.key)
            rows.append({"subject": s.key, "status": "failed", "error": unprocessed[s.key], "seconds": 0.0})
            log.info("%s: failed, not segmented (%s)", s.key, unprocessed[s.key])
            continue
        stamps[s.key] = staging.fingerprint(s.inputs, model_paths, settings, (s.probseg, s.mask))
        if staging.is_cached(staging_dir, s.key, s.probseg, s.mask, stamps[s.key]):
            rows.append({"subject": s.key, "status": "cached", "error": "", "seconds": 0.0})
        else:
            todo.append(s)
    log.info(
        "%d subject(s) to segment, %d already staged and up to date",
        len(todo),
        len(subjects) - len(todo) - len(unprocessed),
    )
    if todo:
        rows += _segment_all(todo, model_paths, settings, staging_dir, stamps, max(1, int(writers)))
    order = {s.key: i for i, s in enumerate(subjects)}
    rows.sort(key=lambda r: order[r["subject"]])
    staging.write_status(status_path, rows)
    failed = [r for r in rows if r["status"] == "failed"]
    log.info(
        "chunk done: %d segmented, %d cached, %d failed%s",
        sum(r["status"] == "done" for r in rows),
        sum(r["status"] == "cached" for r in rows),
        len(failed),
        "".join(f"\n  {r['subject']}: {r['error']}" for r in failed),
    )
    return rows


def write_threads(device, threads) -> int:
    """How many subjects a chunk post-processes and writes side by side.

    On a GPU the FCN pass of a subject takes a fraction of a second while its CPU part (the template
    registration of ``restrict_to``, the depth rule, gzip) takes seconds, so one writer would keep the
    GPU waiting: every CPU of the job but the one feeding the GPU writes. On a CPU the FCN already uses
    every thread; a second writer would only compete with it.
    """
    from .device import pick_device

    return max(1, int(threads or 1) - 1) if pick_device(device).type == "cuda" else 1


def _segment_all(todo, model_paths, settings, staging_dir, stamps, writers=1) -> list[dict]:
    from .infer import load_models, predict_subject

    started = time.perf_counter()
    models, metas = load_models(model_paths)  # once per chunk: the whole point
    channels = metas[0].get("channels", "flair,t1,tophat")
    log.info("model(s) loaded in %.1f s; %d subject(s) written side by side", time.perf_counter() - started, writers)
    rows, writing = [], deque()
    # Three stages side by side: a reader thread decompresses and checks the next subject, this thread
    # runs the FCN (the GPU's part), ``writers`` threads post-process and write the previous ones (ITK,
    # zlib and most of numpy release the GIL). At most ``writers`` subjects wait to be written, so memory
    # stays that of writers + 2 subjects.
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-next") as reader,
        ThreadPoolExecutor(max_workers=writers, thread_name_prefix="write-previous") as writer,
    ):
        pending = reader.submit(_read, todo[0], model_paths, metas, channels)
        for i, subject in enumerate(todo):
            current = pending
            if i + 1 < len(todo):
                pending = reader.submit(_read, todo[i + 1], model_paths, metas, channels)
            t0 = time.perf_counter()
            try:
                volumes, flair_img = current.result()
                staging.forget(staging_dir, subject.key)
                predicted = predict_subject(models, metas, volumes, flair_img, settings)
            except Exception as exc:  # noqa: BLE001 (one subject's failure; _failed says which kinds)
                rows.append(_row(subject, t0, _failed(subject, exc)))
                continue
            rows += _written(writing, keep=writers - 1)
            writing.append(
                (
                    subject,
                    t0,
                    writer.submit(
                        _write,
                        subject,
                        predicted,
                        volumes,
                        flair_img,
                        metas,
                        model_paths,
                        settings,
                        staging_dir,
                        stamps[subject.key],
                    ),
                )
            )
        rows += _written(writing, keep=0)
    return rows


def _written(writing: deque, keep: int) -> list[dict]:
    """Rows of the oldest subjects being written, waited for until at most ``keep`` are left."""
    rows = []
    while len(writing) > keep:
        subject, t0, outcome = writing.popleft()
        rows.append(_row(subject, t0, outcome.result()))
    return rows


def _write(subject, predicted, volumes, flair_img, metas, model_paths, settings, staging_dir, stamp) -> dict:
    """The writer thread's part: post-processing, the staged files, then the fingerprint (last)."""
    from .infer import write_subject

    try:
        write_subject(
            predicted,
            metas,
            model_paths,
            volumes,
            flair_img,
            subject.inputs,
            staging.staged_path(staging_dir, subject.key, subject.probseg),
            staging.staged_path(staging_dir, subject.key, subject.mask),
            settings,
            named_as=(subject.probseg, subject.mask),
        )
        staging.stamp(staging_dir, subject.key, stamp)
    except Exception as exc:  # noqa: BLE001
        return dict(_failed(subject, exc), finished=time.perf_counter())
    return {"status": "done", "error": "", "finished": time.perf_counter()}


def _failed(subject, exc) -> dict:
    """A subject's own failure as a status row; anything else (a bug, an interrupt) stops the chunk."""
    if isinstance(exc, WmhflowError):
        return {"status": "failed", "error": str(exc)}
    if isinstance(exc, (OSError, ValueError, RuntimeError)):  # unexpected, but only this subject's (CUDA OOM too)
        log.error("%s failed", subject.key, exc_info=exc)
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    raise exc


def _row(subject, t0, outcome) -> dict:
    """A status row: the subject's seconds from its FCN pass to its last file written."""
    outcome = dict(outcome)
    seconds = outcome.pop("finished", time.perf_counter()) - t0
    log.info(
        "%s: %s in %.1f s%s",
        subject.key,
        outcome["status"],
        seconds,
        f" ({outcome['error']})" if outcome["error"] else "",
    )
    return dict(outcome, subject=subject.key, seconds=round(seconds, 2))


# ------------------------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    from .infer import add_inference_arguments

    parser.add_argument("--subjects", required=True, nargs="+", help="the subjects' keys (sub-01/anat/sub-01 ...)")
    parser.add_argument("--flair", required=True, nargs="+", help="8-bit FLAIR of each subject, in order")
    parser.add_argument("--t1", nargs="*", default=[], help="8-bit T1 of each subject (none: FLAIR-only channels)")
    parser.add_argument("--tophat", nargs="*", default=[], help="top-hat of each subject")
    parser.add_argument("--probseg", required=True, nargs="+", help="where each subject's probability is placed")
    parser.add_argument("--mask", required=True, nargs="+", help="where each subject's mask is placed")
    parser.add_argument("--model", required=True, nargs="+", help="model.pt; several: an ensemble")
    parser.add_argument("--staging", required=True, help="folder the subjects' files are written to first")
    parser.add_argument("--status", required=True, help="output: the chunk's status table (TSV)")
    parser.add_argument(
        "--preprocessed", help="the chunk's preprocess-batch status table: its failed subjects are not segmented"
    )
    add_inference_arguments(parser)


def main(args) -> int:
    from .device import set_threads
    from .infer import check_postprocessing_arguments, settings_of

    check_postprocessing_arguments(args)
    set_threads(args.threads)
    subjects = subjects_of(args.subjects, args.flair, args.t1, args.tophat, args.probseg, args.mask)
    for path in args.model:
        if not os.path.isfile(path):
            raise InputError(path, "model file does not exist")
    settings = settings_of(args)
    writers = write_threads(settings["device"], args.threads)
    rows = run_chunk(subjects, args.model, settings, args.staging, args.status, writers, args.preprocessed)
    log.info("settings: %s", json.dumps(dict(settings, model=args.model, subjects=len(rows))))
    return 0
