"""``wmhflow check``: read every input image of one subject and refuse it before any compute.

The workflow runs this first for each subject (rule ``check_subject``); every other rule of the
subject depends on its output, so a bad subject stops here, with one line per problem naming the
file, and with ``--keep-going`` the other subjects go on. ``wmhflow discover --check`` and
``wmhflow segment`` run the same checks, and the verbs reading a reference (train, evaluate, qc) use
the same label check (:func:`wmhflow.io.label_array`).

What is checked, beyond what :func:`wmhflow.io.load_nifti` refuses for any image (missing, corrupt,
not 3D, NaN/Inf, no orientation, a single slice, implausible voxel sizes):
- FLAIR and T1 have signal: not constant (a blank or zero-filled image) and a head is found;
- the T1 is not the FLAIR file itself, and when it is on another grid (to be registered), both images
  have the 4 voxels per axis the registration needs;
- the reference is on the FLAIR's voxel grid and a label image of 0, 1, 2.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import InputError
from .io import atomic_output, label_array, load_nifti, require_same_grid, same_grid, voxels
from .preprocess.align import require_registrable

log = logging.getLogger(__name__)
#: A head covering less than this fraction of the volume is no head (a few bright specks in air).
MIN_HEAD_FRACTION = 0.001


def require_signal(img, path, role: str) -> float:
    """Refuse a blank, constant or head-less image; returns the head's fraction of the volume."""
    from .preprocess.headmask import head_mask_array

    data = voxels(img)
    low, high = float(data.min()), float(data.max())
    if low == high:
        raise InputError(path, f"{role} is constant (every voxel is {low:g}): a blank image, nothing to segment")
    fraction = float(head_mask_array(data).mean())
    if fraction < MIN_HEAD_FRACTION:
        raise InputError(
            path,
            f"{role} shows no head ({fraction:.2%} of the volume above the background): a blank or noise-only image",
        )
    return fraction


def _describe(img, path) -> dict:
    return {
        "path": str(path),
        "shape": list(img.shape[:3]),
        "voxel_mm": [round(float(v), 4) for v in np.linalg.norm(img.affine[:3, :3], axis=0)],
        "orientation": "".join(nib.aff2axcodes(img.affine)),
        "qform_code": int(img.header["qform_code"]),
        "sform_code": int(img.header["sform_code"]),
    }


def check_images(flair, t1=None, reference=None) -> tuple[dict, list[str]]:
    """(what was found, problems): every problem one line naming its file; no problems = usable."""
    found, problems = {}, []

    def attempt(step):
        try:
            step()
        except InputError as exc:
            problems.append(str(exc))

    try:
        flair_img = load_nifti(flair, "FLAIR")
        found["flair"] = _describe(flair_img, flair)
        found["flair"]["head_fraction"] = round(require_signal(flair_img, flair, "FLAIR"), 4)
    except InputError as exc:
        problems.append(str(exc))
        flair_img = None
    if t1:

        def check_t1():
            if Path(t1).resolve() == Path(flair).resolve():
                raise InputError(t1, "T1 is the FLAIR file itself: give the subject's T1 image")
            t1_img = load_nifti(t1, "T1")
            found["t1"] = _describe(t1_img, t1)
            found["t1"]["head_fraction"] = round(require_signal(t1_img, t1, "T1"), 4)
            if flair_img is not None and not same_grid(t1_img, flair_img):  # it will be registered
                require_registrable(flair_img, flair, "FLAIR")
                require_registrable(t1_img, t1, "T1")
            found["t1"]["on_flair_grid"] = flair_img is not None and same_grid(t1_img, flair_img)

        attempt(check_t1)
    if reference:

        def check_reference():
            ref_img = load_nifti(reference, "reference")
            if flair_img is not None:
                require_same_grid(ref_img, reference, flair_img, flair, "reference")
            labels = label_array(ref_img, reference)
            found["reference"] = dict(
                _describe(ref_img, reference),
                wmh_voxels=int((labels == 1).sum()),
                other_pathology_voxels=int((labels == 2).sum()),
            )

        attempt(check_reference)
    return found, problems


def add_arguments(parser) -> None:
    parser.add_argument("--subject", required=True)
    parser.add_argument("--flair", required=True)
    parser.add_argument("--t1", default="", help="empty: none")
    parser.add_argument("--reference", default="", help="empty: none")
    parser.add_argument("-o", "--output", help="JSON summary written when every check passes")


def main(args) -> int:
    found, problems = check_images(args.flair, args.t1, args.reference)
    if problems:
        for problem in problems:
            print(f"wmhflow check: error: {problem}", file=sys.stderr)
        return 2
    summary = {"subject": args.subject, "status": "ok", **found}
    text = json.dumps(summary, indent=2) + "\n"
    if args.output:
        with atomic_output(args.output) as tmp:
            tmp.write_text(text)
    else:
        sys.stdout.write(text)
    log.info("%s: every input image read and checked", args.subject)  # --subject is the output prefix, sub- included
    return 0
