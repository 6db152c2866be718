"""Draw docs/img/synth_sites.png: one axial slice of a full-size synthetic subject per site.

A 3x3 figure: one row per site (Utrecht, Singapore, Amsterdam/GE3T, each on its own grid), columns
FLAIR, T1 and the reference labels over the FLAIR (WMH = 1 red, other pathology = 2 blue). The
slice shown is the one with the most WMH voxels. Display: world left-right across, anterior up
(neurological convention), pixels drawn with their true aspect ratio.

Run: ``python benchmarks/make_synth_figure.py`` (about half a minute: three full-size subjects).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "docs/img/synth_sites.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from wmhflow.io import atomic_output
    from wmhflow.synth import SITES, synthesize_subject

    fig, axes = plt.subplots(3, 3, figsize=(10.5, 11), facecolor="black")
    labels_cmap = ListedColormap([(0, 0, 0, 0), (1.0, 0.15, 0.1, 0.85), (0.2, 0.5, 1.0, 0.85)])
    for row, site in enumerate(SITES):
        flair, t1, ref = synthesize_subject(site, args.seed * 100003 + row)
        f, t, lab = (np.asarray(img.dataobj) for img in (flair, t1, ref))
        per_slice = (lab == 1).sum(axis=(0, 1))
        if (lab == 2).any():  # show both labels when the subject has an "other pathology" region
            per_slice = np.where((lab == 2).any(axis=(0, 1)), per_slice + 1, -1)
        k = int(np.argmax(per_slice)) if per_slice.max() > 0 else f.shape[2] // 2
        spacing = flair.header.get_zooms()[:3]
        aspect = spacing[1] / spacing[0]  # imshow rows are the j axis after the transpose

        def show(ax, data, k=k, aspect=aspect, **kw):
            ax.imshow(data[:, :, k].T, origin="lower", cmap="gray", aspect=aspect, interpolation="nearest", **kw)

        vmax_f, vmax_t = np.percentile(f, 99.7), np.percentile(t, 99.7)
        show(axes[row, 0], f, vmin=0, vmax=vmax_f)
        show(axes[row, 1], t, vmin=0, vmax=vmax_t)
        show(axes[row, 2], f, vmin=0, vmax=vmax_f)
        axes[row, 2].imshow(
            lab[:, :, k].T, origin="lower", cmap=labels_cmap, vmin=0, vmax=2, aspect=aspect, interpolation="nearest"
        )
        n_wmh, n_other = int((lab == 1).sum()), int((lab == 2).sum())
        axes[row, 0].set_ylabel(
            f"{site.name}\n{'x'.join(map(str, site.shape))}, {' x '.join(f'{s:g}' for s in site.spacing)} mm",
            color="white",
            fontsize=10,
        )
        axes[row, 2].set_xlabel(f"slice {k}; volume: WMH {n_wmh} vox, other {n_other} vox", color="white", fontsize=9)
        for col, name in enumerate(("FLAIR", "T1", "labels over FLAIR (1 red, 2 blue)")):
            if row == 0:
                axes[row, col].set_title(name, color="white", fontsize=12)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            for spine in axes[row, col].spines.values():
                spine.set_visible(False)
        print(f"{site.name}: slice {k}, {n_wmh} WMH voxels", flush=True)
    fig.suptitle("wmhflow.synth: one full-size synthetic subject per site", color="white", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = Path(args.out)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=90, facecolor=fig.get_facecolor())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
