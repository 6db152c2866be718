"""Cohort discovery: one table of subjects from a WMH-challenge tree, a BIDS dataset or a subjects TSV.

The table has one row per FLAIR acquisition (a subject, or a subject's session), indexed by its
output ``prefix`` (``sub-01/ses-2/anat/sub-01_ses-2``, see :mod:`wmhflow.paths`; the rules' wildcard),
with columns ``subject, session, site, flair, t1, reference, split``: labels (``session`` "" without
sessions), absolute paths (``t1`` and ``reference`` "" when there is none) and ``split`` in
train | test | predict.

Layouts
- **challenge**: ``<root>/<site>/<id>/pre/FLAIR.nii.gz``, ``pre/T1.nii.gz`` and ``<id>/wmh.nii.gz``; the
  site may be nested (``<root>/Amsterdam/GE3T/<id>/``, site ``Amsterdam/GE3T``). ``orig/`` instead of
  ``pre/`` when asked.
- **bids**: ``sub-<s>/[ses-<t>/]anat/*_FLAIR.nii.gz`` and ``*_T1w.nii.gz``; the site from
  participants.tsv's ``site`` column when present; references from a pattern under the dataset root.
  A subject with sessions gives one row per session; the FLAIR's acq-/ce-/rec-/run- entities are kept
  in the prefix, so a session with two FLAIRs (say acq-axial and acq-sagittal) gives two rows, each
  processed (logged), paired with the session's one T1w or the T1w with the same entities.
  ``.nii`` is read as well as ``.nii.gz``.

Why a glob and not pybids / bids2table / snakebids: see :func:`_bids`.
- **tsv**: columns subject, site, flair, t1, reference, split (paths relative to the TSV's folder).

Discovery only looks at file names, so that planning a 1,000-subject cohort stays fast; the voxel
checks (corrupt files, 4D, NaN, grids, labels) run in the first rule that reads each file, or up front
with ``wmhflow discover --check``.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, InputError, WmhflowError
from .paths import KEPT_ENTITIES, prefix

log = logging.getLogger(__name__)

COLUMNS = ["subject", "session", "site", "flair", "t1", "reference", "split"]
SPLITS = ("train", "test", "predict")
LAYOUTS = ("auto", "challenge", "bids", "tsv")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")


# --------------------------------------------------------------------------------------- layouts
def detect_layout(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() in (".tsv", ".txt", ".csv"):
            return "tsv"
        raise InputError(path, "cohort must be a folder (WMH-challenge tree or BIDS dataset) or a subjects .tsv")
    if not path.is_dir():
        raise InputError(path, "cohort folder does not exist")
    if (path / "dataset_description.json").is_file() or any(p.is_dir() for p in path.glob("sub-*")):
        return "bids"
    return "challenge"


def _challenge(root: Path, images: str, exclude: list[Path]) -> list[dict]:
    rows = []
    # os.walk does not enter symbolic links, so a folder it would enter is an excluded (resolved) one only
    # if it has that folder's name: only those are resolved, not every folder (seconds at 10,000 subjects).
    excluded_names = {p.name for p in exclude}
    for dirpath, dirnames, filenames in os.walk(root):
        # Never index our own outputs (or hidden folders) as input, even when results/ is inside the cohort.
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and (d not in excluded_names or Path(dirpath, d).resolve() not in exclude)
        )
        if os.path.basename(dirpath) != images or "FLAIR.nii.gz" not in filenames:
            continue
        # plain strings (os.walk's are normalised, as pathlib's): pathlib costs ~10 us an operation here
        subject_dir = os.path.dirname(dirpath)
        site = Path(subject_dir).parent.relative_to(root).as_posix()
        reference = os.path.join(subject_dir, "wmh.nii.gz")
        rows.append(
            {
                "subject": os.path.basename(subject_dir),
                "session": "",
                "site": site if site != "." else "all",
                "flair": os.path.join(dirpath, "FLAIR.nii.gz"),
                "t1": os.path.join(dirpath, "T1.nii.gz") if "T1.nii.gz" in filenames else "",
                "reference": reference if os.path.exists(reference) else "",
                "split": "",
            }
        )
        dirnames[:] = []
    if not rows:
        raise InputError(root, f"no subjects found: expected <site>/<id>/{images}/FLAIR.nii.gz below this folder")
    return rows


def _bids_sites(root: Path) -> dict[str, str]:
    participants = root / "participants.tsv"
    if not participants.is_file():
        return {}
    table = read_tsv(participants, what="participants.tsv")
    if not table or "participant_id" not in table[0] or "site" not in table[0]:
        return {}
    return {r["participant_id"].removeprefix("sub-"): r["site"] for r in table if r["site"]}


_ENTITY = re.compile(r"_(?P<key>[a-z]+)-(?P<value>[A-Za-z0-9]+)")


def _entities(path: Path) -> dict:
    """The kept entities (acq, ce, rec, run; not sub/ses, which the folders give) of a BIDS file name."""
    found = dict((m["key"], m["value"]) for m in _ENTITY.finditer("_" + path.name.split(".")[0]))
    return {k: v for k, v in found.items() if k in KEPT_ENTITIES and k != "ses"}


def _images(anat: Path, suffix: str) -> list[Path]:
    return sorted(anat.glob(f"*_{suffix}.nii.gz")) + sorted(anat.glob(f"*_{suffix}.nii"))


def _matching_t1(flair: Path, t1s: list[Path], anat: Path):
    if len(t1s) <= 1:
        return t1s[0] if t1s else None
    same = [t for t in t1s if _entities(t) == _entities(flair)]
    if len(same) == 1:
        return same[0]
    names = ", ".join(p.name for p in t1s)
    raise InputError(
        anat,
        f"several T1w images ({names}) and none with the entities of {flair.name}: "
        f"keep one, or list the pairs in a subjects TSV",
    )


def _bids(root: Path, reference_pattern: str) -> list[dict]:
    """Rows of a BIDS dataset, by a glob of the few names wmhflow reads.

    Decision (issue 11), measured with ``benchmarks/bench_dryrun.py --layout bids`` on 1,000 subjects
    x 2 sessions (benchmarks/results/dryrun_bids.csv): this glob lists the 2,000 FLAIRs in 0.68 s,
    bids2table 2.3 indexes the dataset in 1.49 s, pybids 0.22 (BIDSLayout, validate off, + get) takes
    9.9 s; all three found the same acquisitions. pybids alone would add ~10 s to every
    ``snakemake`` start (planning is already Snakemake-bound), and snakebids builds on pybids and would
    replace wmhflow.plan; bids2table is fast but a new dependency (pyarrow) for what a glob of the
    few names wmhflow reads (``sub-*/[ses-*/]anat/*_FLAIR|T1w.nii[.gz]``) does with sessions,
    entities and ``.nii`` covered by tests/test_cohort.py. A dataset needing BIDS inheritance or
    filters beyond these can be listed in a subjects TSV.
    """
    sites = _bids_sites(root)
    rows = []
    for sub_dir in sorted(p for p in root.glob("sub-*") if p.is_dir()):
        sub = sub_dir.name.removeprefix("sub-")
        sessions = sorted(p for p in sub_dir.glob("ses-*") if p.is_dir()) or [None]
        for ses_dir in sessions:
            ses = ses_dir.name.removeprefix("ses-") if ses_dir else ""
            anat = (ses_dir or sub_dir) / "anat"
            flairs = _images(anat, "FLAIR")
            if not flairs:
                log.warning("%s: no *_FLAIR.nii[.gz], skipped", anat)
                continue
            if len(flairs) > 1:
                log.info(
                    "%s: %d FLAIR images (%s), each processed under its own name",
                    anat,
                    len(flairs),
                    ", ".join(p.name for p in flairs),
                )
            t1s = _images(anat, "T1w")
            for flair in flairs:
                t1 = _matching_t1(flair, t1s, anat)
                reference = ""
                if reference_pattern:
                    candidate = root / reference_pattern.format(
                        subject=sub, session=f"ses-{ses}/" if ses else "", session_=f"ses-{ses}_" if ses else ""
                    )
                    reference = candidate if candidate.exists() else ""
                rows.append(
                    {
                        "subject": sub,
                        "session": ses,
                        "entities": _entities(flair),
                        "site": sites.get(sub, "all"),
                        "flair": flair,
                        "t1": t1 if t1 is not None else "",
                        "reference": reference,
                        "split": "",
                    }
                )
    if not rows:
        raise InputError(root, "no subjects found: expected sub-*/[ses-*/]anat/*_FLAIR.nii[.gz]")
    return rows


def read_tsv(path, required=(), what="subjects TSV") -> list[dict]:
    """The rows of a user's TSV as dicts of stripped strings, every field count checked.

    Hand-written because pandas guesses where a spreadsheet's export needs a rule: with a trailing
    tab on every row it takes the first column as the index and shifts every column by one. Here
    empty fields at the end of a line (trailing tabs) are dropped, then each line must have exactly
    as many fields as the header, or the error names the line, its count and the header's. Also
    handled: a UTF-8 byte-order mark, CRLF or CR line ends, blank lines, quoted fields (csv module).
    """
    import csv

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"{what} is not readable ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            path, f"{what} is not UTF-8 text (byte {exc.start}): save it as UTF-8 (tab-separated)"
        ) from None
    if not text.strip():
        raise InputError(
            path, f"{what} is empty: expected a header line (tab-separated column names) and one line per row"
        )
    try:
        lines = list(csv.reader(text.splitlines(), delimiter="\t", strict=True))
    except csv.Error as exc:
        raise InputError(path, f"{what} is not a valid TSV ({exc})") from None

    def trimmed(fields, keep=0):
        fields = [f.strip() for f in fields]
        while len(fields) > keep and not fields[-1]:  # trailing tabs beyond the header's columns
            fields.pop()
        return fields

    numbered = [(n, fields) for n, fields in enumerate(lines, start=1) if any(f.strip() for f in fields)]
    header = trimmed(numbered[0][1])
    body = [(n, trimmed(fields, len(header))) for n, fields in numbered[1:]]
    if len(header) == 1 and ("," in header[0] or ";" in header[0]):
        raise InputError(
            path, f"line 1: {what} must be tab-separated, found {header[0][:60]!r} (comma/semicolon-separated?)"
        )
    if "" in header:
        raise InputError(path, f"line 1: column {header.index('') + 1} of the header has no name")
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise InputError(path, f"line 1: column(s) {', '.join(duplicated)} appear more than once in the header")
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(path, f"line 1: {what} lacks column(s) {', '.join(missing)} (header: {', '.join(header)})")
    rows = []
    for n, fields in body:
        if len(fields) != len(header):
            if len(fields) > len(header):
                detail = f"extra field(s) from {fields[len(header)]!r} on"
            else:
                detail = f"no value for {', '.join(header[len(fields) :])}"
            raise InputError(
                path,
                f"line {n} has {len(fields)} fields but the header has {len(header)} ({', '.join(header)}): {detail}",
            )
        rows.append(dict(zip(header, fields)))
    return rows


def _tsv(path: Path) -> list[dict]:
    # no T1 column or an empty T1: a FLAIR-only subject (the plan refuses it for channel sets needing T1)
    records = read_tsv(path, required=("subject", "flair"))
    if not records:
        raise InputError(path, "subjects TSV has a header but no rows")
    _validate_tsv_rows(records, path)
    base = path.parent
    rows = []
    for r in records:
        rows.append(
            {
                "subject": r["subject"],
                "session": r.get("session", ""),
                "site": r.get("site", "") or "all",
                "flair": base / r["flair"],
                "t1": base / r["t1"] if r.get("t1", "") else "",
                "reference": base / r["reference"] if r.get("reference", "") else "",
                "split": r.get("split", ""),
            }
        )
    return rows


def _validate_tsv_rows(records: list[dict], path: Path) -> None:
    """Check each row against workflow/wmhflow/schemas/subjects.schema.yaml (JSON schema), one line per problem."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(_schema_path().read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for i, record in enumerate(records, start=2):  # line 1 is the header
        error = next(iter(validator.iter_errors(record)), None)
        if error is not None:
            where = ".".join(str(p) for p in error.path) or "row"
            raise InputError(path, f"line {i}, {where}: {error.message}")


def _schema_path() -> Path:
    from .config import SCHEMAS

    return SCHEMAS / "subjects.schema.yaml"


# ---------------------------------------------------------------------------------------- checks
def _finish(rows: list[dict], source: Path) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=COLUMNS + ["entities"])
    bad = [s for s in table["subject"] if not _LABEL.match(s)]
    if bad:
        raise InputError(source, f"subject id {bad[0]!r} is not alphanumeric (needed in output names)")
    bad = [s for s in table["session"] if s and not _LABEL.match(s)]
    if bad:
        raise InputError(source, f"session label {bad[0]!r} is not alphanumeric (needed in output names)")
    table.index = [
        prefix(r.subject, r.session, **(r.entities if isinstance(r.entities, dict) else {})) for r in table.itertuples()
    ]
    table.index.name = "prefix"
    table = table.drop(columns="entities")
    duplicated = table.index[table.index.duplicated()].unique()
    if len(duplicated):
        names = ", ".join(p.rsplit("/", 1)[-1] for p in duplicated[:5])
        raise InputError(source, f"duplicate subject id(s): {names}")
    real_folders: dict[str, str] = {}
    for column in ("flair", "t1", "reference"):
        resolved = []
        for value in table[column]:
            real = _real_file(os.fspath(value), real_folders) if value else ""
            if real is None:
                role = {"flair": "FLAIR", "t1": "T1", "reference": "reference"}[column]
                raise InputError(value, f"{role} image does not exist")
            resolved.append(real)
        table[column] = resolved
    return table


def _real_file(path: str, real_folders: dict[str, str]) -> str | None:
    """``str(Path(path).resolve())`` of an existing file, None when there is no file at ``path``.

    Path.resolve() looks at every folder of the path for a link, per file: 3 files a subject, ~8 folders
    each, was most of discovering a 10,000-subject cohort (seconds of every `snakemake` call). Here each
    folder is resolved once (``real_folders``, shared by the calls) and the file itself with one lstat."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISLNK(mode):
        return os.path.realpath(path) if os.path.isfile(path) else None
    if not stat.S_ISREG(mode):
        return None
    folder, name = os.path.split(path)
    return os.path.join(_real_folder(folder, real_folders), name)


def _real_folder(folder: str, real_folders: dict[str, str]) -> str:
    """os.path.realpath(folder), from its parent's (cached): the same unless the folder is a link, '.' or '..'."""
    if folder not in real_folders:
        parent, name = os.path.split(folder)
        if name in ("", ".", "..") or os.path.islink(folder):
            real_folders[folder] = os.path.realpath(folder)
        else:
            real_folders[folder] = os.path.join(_real_folder(parent, real_folders), name)
    return real_folders[folder]


def _labels(value, key: str, prefix_: str) -> list[str]:
    """Labels from a config value: a list, or one comma-separated string; ``sub-``/``ses-`` optional."""
    if value in (None, "", []):
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    labels = [str(item).strip().removeprefix(prefix_) for item in items]
    bad = [label for label in labels if not _LABEL.match(label)]
    if bad:
        raise ConfigError(key, f"{bad[0]!r} is not a label (alphanumeric, optionally with '{prefix_}')")
    return labels


def select(
    table: pd.DataFrame, participant_label=(), exclude_participant_label=(), session_label=(), exclude_session_label=()
) -> pd.DataFrame:
    """The rows of the chosen participants and sessions, as BIDS apps' ``--participant-label`` does.

    Empty lists select everything; a label the cohort does not have is an error naming it (a typo
    must not silently process nobody, or everybody).
    """
    chosen = pd.Series(True, index=table.index)
    for key, value, column, prefix_, keep in (
        ("participant_label", participant_label, "subject", "sub-", True),
        ("exclude_participant_label", exclude_participant_label, "subject", "sub-", False),
        ("session_label", session_label, "session", "ses-", True),
        ("exclude_session_label", exclude_session_label, "session", "ses-", False),
    ):
        labels = _labels(value, key, prefix_)
        if not labels:
            continue
        unknown = sorted(set(labels) - set(table[column]))
        if unknown:
            raise ConfigError(key, f"not in the cohort: {', '.join(prefix_ + u for u in unknown)}")
        inside = table[column].isin(labels)
        chosen &= inside if keep else ~inside
    if not chosen.any():
        raise ConfigError("participant_label", "the participant/session selection leaves no subject")
    if not chosen.all():
        log.info("participant selection: %d of %d acquisitions", int(chosen.sum()), len(table))
    return table[chosen]


def assign_splits(table: pd.DataFrame, train_per_site: float = 10, seed: int = 0) -> pd.DataFrame:
    """Fill empty ``split`` values reproducibly; splits given (by a TSV) are kept.

    Per site, ``train_per_site`` subjects with a reference train (a count, or a fraction when < 1);
    the other subjects with a reference are ``test``; subjects without one are ``predict`` (the
    paper's protocol: 10 training subjects per site). The draw depends only on the seed, the site name
    and the site's subject ids, so adding a site does not reshuffle the others. The draw is over
    participants: all sessions of a subject land in the same split (no subject both trains and tests).
    """
    table = table.copy()
    # Plain lists, not row-wise pandas (iterrows/.loc cost ~0.1 ms a row: a second at 10,000 subjects).
    splits = table["split"].tolist()
    subjects, sites = table["subject"].tolist(), table["site"].tolist()
    for key, split, reference, flair in zip(table.index, splits, table["reference"], table["flair"]):
        if split and split not in SPLITS:
            raise InputError(key, f"split {split!r} is not one of {', '.join(SPLITS)}")
        if split in ("train", "test") and not reference:
            raise InputError(flair, f"{key} is in split '{split}' but has no reference")
    open_rows: dict[str, list[int]] = {}  # site -> rows without a split but with a reference
    for i, (split, reference) in enumerate(zip(splits, table["reference"])):
        if not split and reference:
            open_rows.setdefault(sites[i], []).append(i)
    for site in sorted(open_rows):
        open_ = sorted({subjects[i] for i in open_rows[site]})
        count = int(round(train_per_site * len(open_))) if train_per_site < 1 else int(train_per_site)
        rng = np.random.default_rng([seed, zlib.crc32(site.encode())])
        chosen = set(rng.permutation(open_)[: min(count, len(open_))])
        for i in open_rows[site]:
            splits[i] = "train" if subjects[i] in chosen else "test"
    table["split"] = ["predict" if split == "" else split for split in splits]
    return table


def discover(cohort, layout: str = "auto", images: str = "pre", bids_reference: str = "", exclude=()) -> pd.DataFrame:
    """The subjects table (splits not yet assigned: empty unless a TSV gives them)."""
    path = Path(cohort).expanduser()
    if layout not in LAYOUTS:
        raise ConfigError("cohort_layout", f"{layout!r} is not one of {', '.join(LAYOUTS)}")
    layout = detect_layout(path) if layout == "auto" else layout
    if not path.exists():
        raise InputError(path, "cohort does not exist")
    excluded = [Path(p).resolve() for p in exclude]
    if layout == "challenge":
        rows = _challenge(path, images, excluded)
    elif layout == "bids":
        rows = _bids(path, bids_reference)
    else:
        rows = _tsv(path)
    log.info("cohort %s (%s layout): %d subjects", path, layout, len(rows))
    return _finish(rows, path)


# ---------------------------------------------------------------------------------- deep checks
def check_subject(subject: str, row) -> list[str]:
    """Read every image of a subject and return its problems (one line each, naming the file).

    The same checks as the workflow's first step per subject (``wmhflow check``, :mod:`wmhflow.checks`).
    """
    from .checks import check_images

    return check_images(row["flair"], row["t1"], row["reference"])[1]


# ------------------------------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("--cohort", required=True, help="WMH-challenge tree, BIDS dataset or subjects TSV")
    parser.add_argument("--layout", default="auto", choices=LAYOUTS)
    parser.add_argument("--images", default="pre", choices=("pre", "orig"), help="challenge layout: image folder")
    parser.add_argument("--bids-reference", default="", help="BIDS: reference pattern under the dataset root")
    parser.add_argument("--train-per-site", type=float, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="also read every image and check it")
    parser.add_argument("-o", "--output", help="write the table here (default: standard output)")
    # The workflow's config keys of the same names (participant_label, ...), as BIDS apps name them.
    for key, what in SELECTION_FLAGS.items():
        parser.add_argument("--" + key.replace("_", "-"), nargs="+", default=[], metavar="LABEL", help=what)


SELECTION_FLAGS = {
    "participant_label": "only these participants (01 or sub-01)",
    "exclude_participant_label": "all participants but these",
    "session_label": "only these sessions (1 or ses-1)",
    "exclude_session_label": "all sessions but these",
}


def main(args) -> int:
    table = discover(args.cohort, args.layout, args.images, args.bids_reference)
    try:  # selected before the splits are drawn, as the workflow does (workflow_subjects.py)
        table = select(table, **{key: getattr(args, key) for key in SELECTION_FLAGS})
    except ConfigError as exc:  # name the flag the user typed, not the config key
        raise WmhflowError(f"--{exc.key.replace('_', '-')}: {exc.problem}") from None
    table = assign_splits(table, args.train_per_site, args.seed)
    if args.check:
        problems = [p for s, row in table.iterrows() for p in check_subject(s, row)]
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            log.error("%d problem(s) in %d subjects", len(problems), len(table))
            return 2
        log.info("all %d subjects' images read and checked", len(table))
    if args.output:
        from .io import atomic_output

        with atomic_output(args.output) as tmp:
            table.to_csv(tmp, sep="\t")
    else:
        table.to_csv(sys.stdout, sep="\t")
    return 0
