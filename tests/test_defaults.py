"""One home per default: the step modules' constants, the config schema's ``default:``, config.yaml
and every CLI verb that takes the setting must agree (issue 12). A new default typed somewhere else
fails here, naming where."""

import argparse
import importlib
from pathlib import Path

import pytest
import yaml

from wmhflow import config as wconfig
from wmhflow.fcn import infer
from wmhflow.fcn.calibration import DEFAULT_THRESHOLD
from wmhflow.preprocess import bias, quantize, tophat

REPO = Path(__file__).resolve().parent.parent

# (config section, key) -> (the constant that is its home, the verbs whose flag carries it, flag's dest)
HOMES = {
    ("bias_correction", "shrink"): (list(bias.SHRINK), ["wmhflow.preprocess.bias", "wmhflow.segment"], "shrink"),
    ("bias_correction", "iterations"): (
        list(bias.ITERATIONS),
        ["wmhflow.preprocess.bias", "wmhflow.segment"],
        "iterations",
    ),
    ("bias_correction", "control_points"): (
        bias.CONTROL_POINTS,
        ["wmhflow.preprocess.bias", "wmhflow.segment"],
        "control_points",
    ),
    ("requantize", "window"): (quantize.WINDOW, ["wmhflow.preprocess.quantize"], "window"),
    ("requantize", "low_percentile"): (quantize.LOW_PCT, ["wmhflow.preprocess.quantize", "wmhflow.segment"], "low_pct"),
    ("requantize", "high_percentile"): (
        quantize.HIGH_PCT,
        ["wmhflow.preprocess.quantize", "wmhflow.segment"],
        "high_pct",
    ),
    ("tophat", "area"): (tophat.AREA, ["wmhflow.preprocess.tophat", "wmhflow.segment"], "area"),
    ("tophat", "connectivity"): (tophat.CONNECTIVITY, ["wmhflow.preprocess.tophat", "wmhflow.segment"], "connectivity"),
    ("segment", "batch_size"): (
        infer.BATCH_SIZE,
        ["wmhflow.fcn.infer", "wmhflow.fcn.infer_batch", "wmhflow.segment"],
        "batch_size",
    ),
    ("segment", "crop_margin"): (
        infer.CROP_MARGIN,
        ["wmhflow.fcn.infer", "wmhflow.fcn.infer_batch", "wmhflow.segment"],
        "crop_margin",
    ),
}


def _verb_defaults(module_name: str) -> dict:
    parser = argparse.ArgumentParser()
    importlib.import_module(module_name).add_arguments(parser)
    return {action.dest: action.default for action in parser._actions}


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize(("section", "key"), sorted(HOMES))
def test_each_default_has_one_value_everywhere(section, key):
    home, verbs, dest = HOMES[(section, key)]
    schema_default = wconfig.schema()["properties"][section]["properties"][key]["default"]
    assert _as_list(schema_default) == _as_list(home), f"schema {section}.{key}"
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    assert _as_list(shipped[section][key]) == _as_list(home), f"config.yaml {section}.{key}"
    for module_name in verbs:
        flag_default = _verb_defaults(module_name)[dest]
        assert _as_list(flag_default) == _as_list(home), f"{module_name} --{dest.replace('_', '-')}"


def test_segment_verbs_threshold_and_postprocessing_defaults_are_the_schemas():
    segment = wconfig.schema()["properties"]["segment"]["properties"]
    for module_name in ("wmhflow.fcn.infer", "wmhflow.fcn.infer_batch", "wmhflow.segment"):
        defaults = _verb_defaults(module_name)
        assert float(defaults["threshold"]) == DEFAULT_THRESHOLD
        assert defaults["tta"] == segment["tta"]["default"], module_name
        for key in ("min_lesion_mm3", "min_depth_mm"):
            schema_default = segment[key]["default"]
            if schema_default is not None:  # null: the verb's own default applies, documented there
                assert defaults[key] == schema_default, f"{module_name} --{key}"


def test_standalone_chain_uses_the_same_defaults_as_the_verbs():
    import inspect

    from wmhflow.segment import ChainSettings

    chain = ChainSettings()
    assert chain.control_points == bias.CONTROL_POINTS
    assert list(chain.shrink) == list(bias.SHRINK) and list(chain.iterations) == list(bias.ITERATIONS)
    assert chain.area == tophat.AREA
    assert chain.connectivity == tophat.CONNECTIVITY
    assert chain.threshold == DEFAULT_THRESHOLD
    # N4's voxels depend on its thread count: `wmhflow segment` pins the workflow's preprocess.threads
    from wmhflow.config import schema

    assert chain.kernel_threads == schema()["properties"]["preprocess"]["properties"]["threads"]["default"]
    # None = infer's constants, resolved when the chain runs (so importing segment needs no torch)
    assert chain.batch_size is None and chain.crop_margin is None
    predict = inspect.signature(infer.predict_volume).parameters
    assert predict["batch_size"].default == infer.BATCH_SIZE
    # a library call without a margin is exact; the verbs and the workflow trade that for speed
    assert predict["crop_margin"].default == infer.EXACT_MARGIN


def test_segment_refuses_a_kernel_thread_count_below_one():
    import subprocess

    from conftest import wmhflow_command

    args = ["segment", "--flair", "f.nii.gz", "--model", "m.pt", "-o", "out", "--kernel-threads", "0"]
    run = subprocess.run(wmhflow_command() + args, capture_output=True, text=True)
    assert run.returncode == 2
    assert "argument --kernel-threads: must be at least 1, got 0" in run.stderr
