"""BIDS derivative names, built in one place (rules, CLI and tests all use it).

An output of one FLAIR acquisition is ``<prefix>_<entities>_<suffix><ext>`` under the results root,
where the *prefix* names the acquisition (``sub-01/anat/sub-01``, or
``sub-01/ses-2/anat/sub-01_ses-2_acq-axial`` with sessions and the FLAIR's own acq-/ce-/rec-/run-
entities) and the entities are the derivative ones (``space``, ``label``, ``desc``). Entities are
written in the order of the BIDS schema (``rules/entities.yaml``), so ``label`` comes before ``desc``
whatever order a caller gives them in.

Every image wmhflow writes is on the FLAIR's voxel grid, so every image name says ``space-FLAIR``
(one rule, no exceptions, so a user never has to guess which grid a file is on).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

#: the BIDS schema's entity order (the anat-relevant part, which is all wmhflow writes).
ENTITY_ORDER = (
    "sub",
    "ses",
    "task",
    "acq",
    "ce",
    "rec",
    "run",
    "echo",
    "part",
    "chunk",
    "space",
    "res",
    "den",
    "label",
    "desc",
)
#: the files ``wmhflow train`` writes into a model's folder, by role (one home: the verb and Plan use it)
MODEL_FILES = {"model": "model.pt", "config": "config.yaml", "log": "training_log.tsv", "curve": "loss_curve.png"}
#: the cohort tables and plots under results/group/, by role (``wmhflow aggregate`` writes four of them)
GROUP_FILES = {
    "subjects": "subjects.tsv",
    "metrics": "metrics.tsv",
    "summary": "summary.tsv",
    "comparison": "model_comparison.tsv",
    "volumes": "lesion_volumes.tsv",
    "boxplots": "metrics_boxplots.png",
    "status": "status.tsv",
}
#: entities of the input FLAIR that the outputs keep (they tell two acquisitions of a session apart).
KEPT_ENTITIES = ("ses", "acq", "ce", "rec", "run")
#: the space of every image wmhflow writes.
SPACE = "FLAIR"
_LABEL = r"[A-Za-z0-9]+"
#: what a prefix looks like (the rules' ``{subject}`` wildcard constraint): no derivative entity can
#: be swallowed by it, because only the kept entities may follow ``sub-``.
PREFIX_PATTERN = (
    rf"sub-{_LABEL}/(ses-{_LABEL}/)?anat/sub-{_LABEL}"
    rf"(_({'|'.join(KEPT_ENTITIES)})-{_LABEL})*"
)


def order_entities(entities: dict) -> list[tuple[str, str]]:
    unknown = [k for k in entities if k not in ENTITY_ORDER]
    if unknown:
        raise ValueError(f"unknown BIDS entit{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}")
    return [(k, str(entities[k])) for k in ENTITY_ORDER if entities.get(k) is not None]


def prefix(subject: str, session: str = "", **entities) -> str:
    """``sub-<s>/[ses-<t>/]anat/sub-<s>[_ses-<t>][_acq-..]``: where one acquisition's outputs go."""
    folder = f"sub-{subject}/" + (f"ses-{session}/" if session else "") + "anat"
    stem = "_".join(f"{k}-{v}" for k, v in order_entities({"sub": subject, "ses": session or None, **entities}))
    return f"{folder}/{stem}"


def prefix_label(prefix_) -> str:
    """sub-01_ses-2: the file-name part of a :func:`prefix` (a subject's key), for messages and titles."""
    return str(prefix_).rsplit("/", 1)[-1]


def derivative_name(prefix_: str, suffix: str, ext: str = ".nii.gz", **entities) -> str:
    """``<prefix>[_space-FLAIR for images][_label-..][_desc-..]_<suffix><ext>`` (BIDS entity order)."""
    if ext in (".nii.gz", ".nii"):
        entities = {"space": SPACE, **entities}
    parts = [prefix_] + [f"{k}-{v}" for k, v in order_entities(entities)]
    return "_".join(parts + [suffix]) + ext


def bids_path(root, subject: str, suffix: str, ext: str = ".nii.gz", session: str = "", **entities) -> Path:
    """``<root>/`` + :func:`derivative_name` of ``prefix(subject, session)``."""
    return Path(root) / derivative_name(prefix(subject, session), suffix, ext, **entities)


_PREFIX_IN_NAME = re.compile(rf"^sub-(?P<subject>{_LABEL})(_ses-(?P<session>{_LABEL}))?_")


def subject_session(name: str) -> tuple[str, str] | None:
    """(subject, session or "") from a BIDS file name, or None when it does not start with sub-."""
    match = _PREFIX_IN_NAME.match(Path(name).name)
    return (match["subject"], match["session"] or "") if match else None


# ------------------------------------------------------------------------------------- sidecars
def sidecar_path(image_path) -> Path:
    """The JSON sidecar of an image: the same name with ``.json`` for ``.nii[.gz]``."""
    path = Path(image_path)
    name = re.sub(r"\.nii(\.gz)?$", "", path.name)
    return path.with_name(name + ".json")


def dataset_root(path) -> Path | None:
    """The BIDS dataset a file belongs to: the folder above its ``sub-*`` folder, else None."""
    path = Path(path).absolute()
    for parent in path.parents:
        if parent.name.startswith("sub-"):
            return parent.parent
    return None


def bids_uri(source, output) -> str:
    """The BIDS URI (BIDS 1.9, "bids:<dataset>:<path>") of ``source`` as seen from ``output``'s dataset.

    A file of the output's own dataset is ``bids::<relative path>``; a file of a dataset listed in the
    output dataset's ``DatasetLinks`` (``dataset_description.json``, wmhflow names the input cohort
    ``raw``) is ``bids:<name>:<relative path>``; anything else (no description beside it, e.g.
    ``wmhflow segment`` into a plain folder) is a ``file://`` URI, which the spec also allows.
    """
    source = Path(source).absolute()
    root = dataset_root(output)
    if root is not None:
        if root in source.parents:
            return f"bids::{source.relative_to(root).as_posix()}"
        description = root / "dataset_description.json"
        if description.is_file():
            links = json.loads(description.read_text()).get("DatasetLinks", {})
            for name, uri in links.items():
                linked = Path(uri.removeprefix("file://"))
                if linked in source.parents:
                    return f"bids:{name}:{source.relative_to(linked).as_posix()}"
    return source.as_uri()


def spatial_reference(source, image_path) -> str:
    """The image every wmhflow output is aligned to, the FLAIR as given: inherited from the source's
    sidecar when it names one (a derivative of a derivative), else the source itself (the raw FLAIR)."""
    sidecar = sidecar_path(source)
    if sidecar.is_file():
        try:
            reference = json.loads(sidecar.read_text()).get("SpatialReference")
        except (json.JSONDecodeError, AttributeError):
            reference = None
        if reference:
            return reference
    return bids_uri(source, image_path)


def write_sidecar(image_path, sources, named_as=None, **parameters) -> Path:
    """Write the image's JSON sidecar atomically: ``Sources`` (BIDS URIs), ``SpatialReference`` (the
    FLAIR; BIDS requires it with a non-standard ``space-``), ``SkullStripped`` and the parameters used.

    ``SpatialReference`` defaults to that of the first source (see :func:`spatial_reference`); pass a
    path to name it explicitly. ``named_as``: where the image will be placed when ``image_path`` is a
    staging place (``wmhflow infer-batch``): URIs are written as seen from there.
    """
    from .atomic import atomic_output

    path = sidecar_path(image_path)
    sources = [s for s in sources if s]
    reference = parameters.pop("SpatialReference", None) or sources[0]
    seen_from = named_as or image_path
    content = {
        "Sources": [bids_uri(s, seen_from) for s in sources],
        "SpatialReference": spatial_reference(reference, seen_from),
        # wmhflow never removes the skull; requantization zeroes what is outside the *head*
        "SkullStripped": False,
        **parameters,
    }
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(np.asarray(value).tolist())
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {value!r}")
