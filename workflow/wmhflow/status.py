"""Per-subject status of a run: which subjects finished, which failed, at which step and why.

Written by the workflow when a run ends (``group/status.tsv``, the failures also printed in the
terminal), and by ``wmhflow status`` at any time. The table is derived from the plan (what each
subject should have) and the files on disk (what it has, and its rules' logs), so it is right after
a crash or a kill too:

- ``done``: every output of the subject exists;
- ``failed``: a rule of the subject logged an error; ``step`` is that rule, ``reason`` the one-line
  message (``wmhflow <verb>: error: <file>: <problem>``) from its log; with ``preprocess.jobs:
  per_chunk`` also a failed row of its chunk's preprocessing table (step ``preprocess_batch``);
- ``blocked``: the subject's own steps did not fail but something it needs did (the model's training,
  or a subject of its segmentation chunk whose own step failed: the chunk's one job cannot start);
- ``incomplete``: not run yet, or interrupted (run again; after a kill, ``snakemake --unlock`` first).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)
COLUMNS = ["subject", "session", "site", "split", "status", "step", "reason", "outputs"]


def error_line(log_file) -> str:
    """The one-line reason a rule failed, from its log ('' when the log shows no failure)."""
    try:
        lines = [line.strip() for line in Path(log_file).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if ": error:" in line or line.startswith("wmhflow ") and "error" in line]
    if errors:
        return errors[-1]
    if any(line.startswith("Traceback") for line in lines):
        return lines[-1]  # an unexpected crash: its exception line
    return ""


def _subject_targets(plan, subject) -> list[str]:
    """What one subject should have: the plan's targets with it, minus those of a plan without subjects."""
    from .plan import Plan

    one = Plan(plan.config, plan.subjects.loc[[subject]])
    none = Plan(plan.config, plan.subjects.iloc[:0])
    shared = set(none.all_targets())
    return [plan.check_file(subject)] + [t for t in one.all_targets() if t not in shared]


def _own_failure(plan, subject) -> tuple[str, str] | None:
    """(rule, one-line reason) of the first of the subject's own rules whose log shows a failure."""
    for log_file in plan.subject_logs(subject):
        reason = error_line(log_file)
        if reason:
            # logs/<rule>/[<model>/]<prefix folders>/<prefix>.log: the rule is the first folder below logs/
            return Path(log_file).relative_to(Path(plan.results) / "logs").parts[0], reason
    return None


def _chunk_preprocessing(plan, chunk) -> dict[str, str]:
    """{subject: one-line reason} of a chunk's subjects whose preprocessing (rule preprocess_batch) failed."""
    from .staging import read_status

    table = plan.preprocess_chunk_status(chunk)
    if not Path(table).exists():
        reason = error_line(plan.log("preprocess_batch", chunk))
        return {s: f"{chunk}: {reason}" for s in plan.segment_chunks[chunk]} if reason else {}
    try:
        rows = read_status(table)
    except Exception as exc:  # noqa: BLE001 (a damaged table: said, not raised, in a status report)
        return {s: f"{chunk}: {exc}" for s in plan.segment_chunks[chunk]}
    return {r["subject"]: r["error"] or "preprocessing failed" for r in rows if r["status"] == "failed"}


def subject_status(plan, subject, own_failures: dict | None = None) -> dict:
    """One row of the status table. ``own_failures``: a cache of :func:`_own_failure` per subject shared
    by the rows of one table, so that a blocked chunk's logs are read once, not once per chunk-mate."""
    own_failures = {} if own_failures is None else own_failures

    def own_failure(key):
        if key not in own_failures:
            own_failures[key] = _own_failure(plan, key)
        return own_failures[key]

    row = plan.subjects.loc[subject]
    targets = _subject_targets(plan, subject)
    present = sum(Path(t).exists() for t in targets)
    status = {
        "subject": row["subject"],
        "session": row.get("session", ""),
        "site": row["site"],
        "split": row["split"],
        "outputs": f"{present}/{len(targets)}",
        "status": "done",
        "step": "",
        "reason": "",
    }
    if present == len(targets):
        return status
    chunk = plan.segment_chunk_of.get(subject) if plan.subjects_per_job > 1 else None
    # preprocess.jobs: per_chunk: the subject's preprocessing is a row of its chunk's table (or, when the
    # chunk job failed as a whole, the error in the chunk's log)
    if chunk and plan.preprocess_per_chunk:
        key = ("preprocess_batch", chunk)
        if key not in own_failures:
            own_failures[key] = _chunk_preprocessing(plan, chunk)
        reason = own_failures[key].get(subject)
        if reason:
            return dict(status, status="failed", step="preprocess_batch", reason=reason)
    failure = own_failure(subject)
    if failure:
        return dict(status, status="failed", step=failure[0], reason=failure[1])
    # a chunk job that failed as a whole (its model file, say; Snakemake then deleted its table): its
    # subjects have no log of their own
    if chunk and not Path(plan.chunk_status(chunk)).exists():
        chunk_log = plan.model_log("infer_batch", chunk)
        reason = error_line(chunk_log)
        if reason:
            return dict(status, status="failed", step="infer_batch", reason=f"{chunk}: {reason}")
    # one segment job serves the chunk: a chunk-mate whose own step failed holds back this subject's mask
    # (not with per_chunk: the chunk's preprocessing job never fails for one subject)
    blocking = chunk and not plan.preprocess_per_chunk
    chunk_mates = [other for other in plan.segment_chunks.get(chunk, []) if other != subject] if blocking else []
    for other in chunk_mates:
        failure = own_failure(other)
        if failure:
            step, reason = failure
            return dict(status, status="blocked", step=step, reason=f"{chunk} waits for {plan.label(other)}: {reason}")
    train_log = plan.train_log()
    if plan.trains_model and row["split"] in ("test", "predict") and not Path(plan.model_file()).exists():
        reason = error_line(train_log)
        if reason:
            return dict(status, status="blocked", step="train", reason=reason)
    return dict(status, status="incomplete", reason="not run, or interrupted: run again")


def status_table(plan) -> pd.DataFrame:
    own_failures: dict = {}
    return pd.DataFrame([subject_status(plan, s, own_failures) for s in plan.subjects.index], columns=COLUMNS)


def write_status(plan, stream=sys.stderr) -> pd.DataFrame:
    """Write ``group/status.tsv`` and print the subjects that did not finish (called when a run ends)."""
    from .io import atomic_output

    table = status_table(plan)
    path = Path(plan.status_file())
    with atomic_output(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    bad = table[table["status"] != "done"]
    print(f"wmhflow: {len(table) - len(bad)} of {len(table)} subjects finished; status table {path}", file=stream)
    for key, r in zip(plan.subjects.index[table["status"] != "done"], bad.to_dict("records")):
        print(f"  {plan.label(key)}  {r['status']}  {r['step'] or '-'}  {r['reason']}", file=stream)
    return table


# ------------------------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("--configfile", default="config.yaml", help="the run's config file (default: config.yaml)")
    parser.add_argument(
        "--config",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="the run's --config values (YAML values, as snakemake reads them)",
    )
    parser.add_argument("-o", "--output", help="also write the table here")


def main(args) -> int:
    import yaml

    from .config import validate
    from .errors import ConfigError
    from .io import atomic_output
    from .plan import Plan
    from .workflow_subjects import subjects_for_workflow

    try:
        config = yaml.safe_load(Path(args.configfile).read_text()) or {}
    except OSError as exc:
        raise ConfigError("configfile", f"{args.configfile}: {exc.strerror}") from None
    for item in args.config:
        key, _, value = item.partition("=")
        loaded = yaml.safe_load(value) if value else None
        if isinstance(loaded, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **loaded}
        else:
            config[key] = loaded
    validate(config)
    plan = Plan(config, subjects_for_workflow(config))
    table = status_table(plan)
    text = table.to_csv(sep="\t", index=False)
    if args.output:
        with atomic_output(args.output) as tmp:
            tmp.write_text(text)
    sys.stdout.write(text)
    return 0 if (table["status"] == "done").all() else 1
