"""The workflow's configuration, checked strictly at planning so that a mistake names its config key.

- Strict: every object of ``workflow/wmhflow/schemas/config.schema.yaml`` forbids unknown keys, so a typo
  (``tophatt``) is an error with a suggestion instead of being ignored. ``train.overrides`` accepts
  exactly the settings of :data:`wmhflow.fcn.presets.PRESETS` (its schema is derived from them here, so a
  setting added to the presets is accepted without editing the schema).
- Integers are integers: ``area: 25.0`` is refused (JSON schema would take 25.0 as an integer and
  the job would fail later, naming an output file).
- Command-line values: Snakemake reads ``--config 'tophat={area: 30}'`` as YAML with every scalar a
  string ({'area': '30'}); each string where the schema wants a number, boolean, null, array or
  object is read again as YAML, so the documented command-line forms mean what they say.
- Checks a schema cannot express: percentiles low < high, files named by the config exist.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path

import yaml

from .errors import ConfigError

#: the package data holding the JSON schemas (config and subjects TSV), read at run time
SCHEMAS = Path(__file__).resolve().parent / "schemas"
SCHEMA_PATH = SCHEMAS / "config.schema.yaml"
#: Limits of some training settings beyond their type (applied to the keys the presets have).
OVERRIDE_LIMITS = {
    "iterations": {"minimum": 1},
    "members": {"minimum": 1},
    "batch_size": {"minimum": 1},
    "crop": {"minimum": 0},
    "lesion_crop_fraction": {"minimum": 0, "maximum": 1},
    "optimizer": {"enum": ["sgd", "adam"]},
    "weight_decay": {"minimum": 0},
    "class_weight": {"exclusiveMinimum": 0},
    "scale_range": {"minItems": 2, "maxItems": 2},
    "rotation_degrees": {"minimum": 0},
    "validation_subjects": {"minimum": 0},
    "validate_every": {"minimum": 1},
    "checkpoint_every": {"minimum": 1},
    "log_every": {"minimum": 1},
    "seed": {"minimum": 0},
    "small_lesion_weight": {"minimum": 0},
    "small_lesion_area": {"exclusiveMinimum": 0},
}
#: the same for the fields of an object-valued setting
OVERRIDE_FIELD_LIMITS = {"weight_average": {"start": {"minimum": 0}, "every": {"minimum": 1}}}


# ---------------------------------------------------------------------------------- the schema
def training_presets() -> dict:
    """:data:`wmhflow.fcn.presets.PRESETS` (a module without torch, so planning stays light)."""
    from .fcn.presets import PRESETS

    return PRESETS


def optional_training_settings() -> dict:
    """:data:`wmhflow.fcn.presets.OPTIONAL_SETTINGS`: accepted overrides that no preset sets."""
    from .fcn.presets import OPTIONAL_SETTINGS

    return OPTIONAL_SETTINGS


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((int, "integer"), (float, "number"), (str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null"


def _schema_of(examples: list) -> dict:
    """The JSON schema of a setting from its values in the presets."""
    kinds = {_json_type(v) for v in examples}
    if "number" in kinds:
        kinds.discard("integer")  # 1 and 1.5 are both numbers
    schema: dict = {"type": sorted(kinds)[0] if len(kinds) == 1 else sorted(kinds)}
    if kinds == {"array"}:
        items = [item for v in examples for item in v]
        if items:
            schema["items"] = _schema_of(items)
    if kinds == {"object"}:
        keys = sorted({k for v in examples for k in v})
        schema["properties"] = {k: _schema_of([v[k] for v in examples if k in v]) for k in keys}
        schema["additionalProperties"] = False
    return schema


def overrides_schema(presets: dict | None = None) -> dict:
    """The schema of ``train.overrides``: the presets' settings, with their types, and nothing else."""
    presets = training_presets() if presets is None else presets
    presets = {**presets, "(optional settings)": optional_training_settings()}
    keys = sorted({k for preset in presets.values() for k in preset})
    properties = {}
    for key in keys:
        properties[key] = _schema_of([p[key] for p in presets.values() if key in p])
        properties[key].update(OVERRIDE_LIMITS.get(key, {}))
        for field, limits in OVERRIDE_FIELD_LIMITS.get(key, {}).items():
            properties[key]["properties"][field].update(limits)
    # x-no-defaults: an override left out means "the preset's value", so nothing is filled in below it
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "default": {},
        "x-no-defaults": True,
    }


def schema() -> dict:
    """config.schema.yaml with ``train.overrides`` spelled out from the presets."""
    full = yaml.safe_load(SCHEMA_PATH.read_text())
    full["properties"]["train"]["properties"]["overrides"] = overrides_schema()
    return full


# ------------------------------------------------------------------------- command-line values
def _types(schema: dict) -> set:
    kind = schema.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


def coerce(value, schema: dict):
    """``value`` with the strings Snakemake's ``--config`` parsing left read as YAML where the schema
    wants something else than a string (recursively through objects and arrays)."""
    types = _types(schema)
    if isinstance(value, str) and types and "string" not in types:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if not isinstance(parsed, str):  # '30' -> 30, '25.5' -> 25.5 (then refused as not an integer)
            value = parsed
    elif isinstance(value, str) and "null" in types and value in ("null", "~", "None"):
        value = None
    elif isinstance(value, str) and "anyOf" in schema:  # e.g. segment.threshold: a number, 'auto' or null
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if not isinstance(parsed, str):
            value = parsed
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {k: coerce(v, properties.get(k, {})) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [coerce(v, schema["items"]) for v in value]
    return value


def _fill_defaults(config: dict, schema: dict) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        elif key not in config and sub.get("type") == "object" and "properties" in sub:
            config[key] = {}  # a section left out of the user's config file: all its defaults
        if isinstance(config.get(key), dict) and sub.get("type") == "object" and not sub.get("x-no-defaults"):
            _fill_defaults(config[key], sub)


# ------------------------------------------------------------------------------------ checking
def _validator(schema: dict):
    import jsonschema

    base = jsonschema.Draft202012Validator
    # JSON schema counts 25.0 as an integer; the rules' command lines do not.
    checker = base.TYPE_CHECKER.redefine_many(
        {
            "integer": lambda _, v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda _, v: isinstance(v, (int, float)) and not isinstance(v, bool),
        }
    )
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _explain(error) -> ConfigError:
    """One ConfigError naming the key for a jsonschema error."""
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        name = unknown[0] if unknown else "?"
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        where = f"{key}.{name}" if error.absolute_path else name
        return ConfigError(where, f"unknown key{hint} (known: {', '.join(known)})")
    if error.validator == "pattern" and key.endswith("device"):
        return ConfigError(key, f"{error.instance!r} is not auto, cpu, cuda or cuda:<index>")
    if error.validator == "type":
        return ConfigError(key, f"{error.instance!r} is not of type {error.validator_value}")
    return ConfigError(key, error.message)


def validate(config: dict) -> dict:
    """Check ``config`` in place (command-line strings read, defaults filled); raise the first
    problem as a :class:`ConfigError` naming its key. Returns ``config``."""
    full = schema()
    config.update(coerce(dict(config), full))
    _fill_defaults(config, full)
    errors = sorted(
        _validator(full).iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if errors:
        raise _explain(errors[0])
    quant = config["requantize"]  # defaults filled in from the schema above: no second copy here
    low, high = quant["low_percentile"], quant["high_percentile"]
    if not low < high:
        raise ConfigError("requantize", f"low_percentile ({low}) must be below high_percentile ({high})")
    # per_chunk preprocesses each segmentation chunk in one job: without chunks there is nothing to join
    if config["preprocess"]["jobs"] == "per_chunk" and config["segment"]["subjects_per_job"] < 2:
        raise ConfigError(
            "preprocess.jobs",
            "per_chunk preprocesses each segmentation chunk in one job, and segment.subjects_per_job is "
            f"{config['segment']['subjects_per_job']} (no chunks): set it to 2 or more, or use jobs: per_subject",
        )
    model = config.get("model", {})
    checkpoints = model.get("checkpoint") or []
    for checkpoint in [checkpoints] if isinstance(checkpoints, str) else checkpoints:  # a list: an ensemble
        if not Path(checkpoint).expanduser().is_file():
            raise ConfigError("model.checkpoint", f"{checkpoint}: model file does not exist")
    pretrained = model.get("pretrained", "none")
    if pretrained not in ("none", "torchvision") and not Path(pretrained).expanduser().is_file():
        raise ConfigError("model.pretrained", f"{pretrained!r} is not none, torchvision or an existing file")
    return config


#: rules renamed so that each carries its verb's name: a profile that names the old rule would have
#: its resources, threads or group silently ignored by Snakemake
RENAMED_RULES = {
    "segment": "infer",
    "segment_chunk": "infer_batch",
    # one job a subject after its segmentation since 2026-12-04 (finish_subject.smk)
    "place_segmentation": "finish_subject",
    "lesions": "finish_subject",
    "qc": "finish_subject",
    # a test subject's evaluation in its finishing job since 2026-12-04 (finish_subject.smk)
    "evaluate": "finish_test_subject",
}
#: the Snakefile includes one of two sets by segment.subjects_per_job; a profile may size both
SEGMENTATION_RULES = ("infer", "infer_batch")
#: and one of two by preprocess.jobs (per_subject: the one rule; per_step: one rule per step; per_chunk:
#: preprocess_batch for the segment chunks and preprocess_subject for the other subjects)
PREPROCESSING_RULES = (
    "preprocess_subject",
    "preprocess_batch",
    "check_subject",
    "align_t1",
    "bias_correct",
    "requantize",
    "tophat",
)
#: and each of the two finishing rules only when the cohort has test or predict subjects
FINISHING_RULES = ("finish_subject", "finish_test_subject")


def check_rule_names(given: dict[str, str], rules) -> None:
    """Fail on a rule name in a profile's ``set-resources``/``set-threads``/``groups`` that no rule has.

    ``given``: {rule name: the setting it came from}; ``rules``: the workflow's rules (with
    :data:`SEGMENTATION_RULES`, :data:`PREPROCESSING_RULES` and :data:`FINISHING_RULES`, whichever are
    included).
    Snakemake ignores such a name without a word, so a typo (or a rule renamed since) would leave a
    GPU job on the CPU partition with the default memory.
    """
    rules = set(rules) | set(SEGMENTATION_RULES) | set(PREPROCESSING_RULES) | set(FINISHING_RULES)
    for name, setting in given.items():
        if name in rules:
            continue
        if name in RENAMED_RULES:
            hint = f": the rule is now named '{RENAMED_RULES[name]}'"
        else:
            close = difflib.get_close_matches(name, sorted(rules), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (rules: {', '.join(sorted(rules))})"
        raise ConfigError(f"{setting} (profile or command line)", f"'{name}' is not a rule of this workflow{hint}")


def require_writable_results(results) -> None:
    """The results folder can be created and written (checked at planning, not by the first job)."""
    import os

    path = Path(results).expanduser().absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError("results", f"{path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError("results", f"{path}: {existing} is not writable")
