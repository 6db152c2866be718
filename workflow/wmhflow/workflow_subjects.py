"""The subjects of a run: the configured cohort (the demo cohort generated first if asked for),
discovered, filtered by participant and session labels, and split into train / test / predict.

Above both :mod:`wmhflow.cohort` (reading a cohort) and :mod:`wmhflow.synth` (making the demo one), so
neither imports the other. ``config`` is a validated config (:func:`wmhflow.config.validate` fills in
every default), so no default is repeated here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .cohort import SELECTION_FLAGS, assign_splits, discover, select
from .errors import ConfigError


def subjects_for_workflow(config: dict, workdir=".") -> pd.DataFrame:
    """The subjects table the Snakefile uses: demo cohort generated if needed, splits assigned."""
    workdir = Path(workdir)
    results = (workdir / config["results"]).resolve()
    cohort = config["cohort"]
    layout = config["cohort_layout"]
    if cohort == "demo":
        from .synth import ensure_demo_cohort

        demo = config["demo"]
        cohort = ensure_demo_cohort(workdir / demo["path"], demo["subjects"], demo["seed"])
        layout = "challenge"
    cohort = workdir / cohort
    if cohort.resolve() == results:
        # results/sub-*/ would then be read back as BIDS subjects on the next run.
        raise ConfigError("results", f"{results} is the input cohort's own folder; choose another output folder")
    table = discover(cohort, layout, config["challenge_images"], config["bids_reference"], exclude=[results])
    table = select(table, **{key: config[key] for key in SELECTION_FLAGS})  # by keyword: no order to keep
    return assign_splits(table, config["splits"]["train_per_site"], config["splits"]["seed"])
