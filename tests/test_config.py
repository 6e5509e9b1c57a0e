"""The whole config is checked before the first job and by every CLI that reads one: each problem is
one line naming the file, the key path and the bad value (no traceback, nothing written)."""
from __future__ import annotations

import copy
import subprocess
import sys
from importlib import resources

import pytest
import yaml
from conftest import REPO
from snakemake.utils import update_config

from thrombseg.cli import main
from thrombseg.config import ConfigError, load_config, read_yaml, validate_config

BASE = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


def _with(over: dict) -> dict:
    """config/config.yaml with ``over`` layered on it, as Snakemake merges config files."""
    cfg = copy.deepcopy(BASE)
    update_config(cfg, copy.deepcopy(over))
    return cfg


def _problem(cfg: dict, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, "c.yaml", **kw)
    return str(info.value)


def test_shipped_configs_validate():
    validate_config(copy.deepcopy(BASE), "config/config.yaml")
    validate_config(_with(PAPER), "config/config.yaml + config/paper.yaml")
    validate_config(copy.deepcopy(PAPER), "config/paper.yaml", partial=True)  # a layer alone, as a CLI reads it
    for overlay in sorted((REPO / "benchmarks").glob("*.yaml")):  # the benchmarks' experiment layers
        validate_config(_with(yaml.safe_load(overlay.read_text())), f"config/config.yaml + {overlay.name}")


def test_the_paper_config_keeps_the_papers_recipe_over_the_demo():
    """config/paper.yaml over config/config.yaml (merged key by key): no post-processing tuning, the
    paper's selection, no hard negatives, no thrombus-negative patients (the demo has all three)."""
    from thrombseg.inference.predict import inference_settings
    from thrombseg.inference.tune import candidates
    from thrombseg.plan import tune_grid

    cfg = _with(PAPER)
    grid = tune_grid(cfg["inference"])
    assert grid.pop("selection") == "rule"
    icfg = inference_settings(cfg["inference"])
    assert candidates(icfg, grid) == [{"min_volume_mm3": None}]  # the configured value only
    assert cfg["synthetic"]["negative_share"] == 0.0
    assert not any(e.get("hard_negatives", {}).get("enabled") for e in cfg["training"]["experiments"].values())
    demo = BASE["training"]["experiments"]["upattllstm_gmd"]
    assert demo["hard_negatives"]["enabled"] and BASE["inference"]["tune"]["selection"] == "score"


def test_nnunet_experiments_are_their_own_kind():
    """`model: nnunet` picks the nnU-Net experiment schema; other experiments keep the training options."""
    from thrombseg.plan import nnunet_settings

    # the paper's nnU-Net keeps nnU-Net's own budget, over the demo's CPU cap of the same experiment
    paper = _with(PAPER)["training"]
    assert BASE["training"]["experiments"]["nnunet_2d"]["epochs"] and nnunet_settings(paper, "nnunet_2d")["budget"] == {}
    assert nnunet_settings(paper, "nnunet_2d_gmd")["budget"] == {}
    cfg = _with({"training": {"experiments": {"nn": {"model": "nnunet", "protocol": "multicentric",
                                                     "configuration": "3d_fullres", "dataset_id": 7, "epochs": 2,
                                                     "iterations": 3, "val_iterations": 1, "seed": 4,
                                                     "dropout": {"schedule": "linear", "p": 0.3}}}}})
    validate_config(cfg)
    # a partial file (a CLI's) is checked the same way: `required` dropped everywhere but in the condition
    validate_config({"training": {"experiments": {"nn": {"model": "nnunet"}, "t": {"model": "clstm"}}}}, partial=True)
    assert "unknown key 'training.experiments.t.iterations'" in _problem(
        _with({"training": {"experiments": {"t": {"model": "clstm", "protocol": "multicentric", "iterations": 3}}}}))


def test_defaults_filled_as_snakemake_validate_did():
    """The workflow relies on the schema's defaults; they are filled exactly as validate(set_default=True)."""
    from snakemake.utils import validate

    minimal = {"training": {"experiments": {"e": {"protocol": "multicentric"}}}}
    for cfg in (minimal, BASE):
        theirs, ours = copy.deepcopy(cfg), copy.deepcopy(cfg)
        validate(theirs, str(resources.files("thrombseg") / "schemas" / "config.schema.json"))
        assert validate_config(ours, set_defaults=True) is ours
        assert ours == theirs
    assert ours["evaluation"] == {"n_boot": 2000} and ours["synthetic"]["size"] == "demo"


@pytest.mark.parametrize("over, expected", [
    ({"centres": ["ctrB"]}, "c.yaml: unknown key 'centres' (did you mean 'centers'?)"),
    ({"training": {"defaults": {"epoch": 3}}}, "unknown key 'training.defaults.epoch' (did you mean 'epochs'?)"),
    ({"training": {"experiments": {"upattllstm_gmd": {"dropuot": {}}}}},
     "unknown key 'training.experiments.upattllstm_gmd.dropuot' (did you mean 'dropout'?)"),
    ({"training": {"infarct": {"dropout": {"schedul": "none"}}}},
     "unknown key 'training.infarct.dropout.schedul' (did you mean 'schedule'?)"),
    ({"inference": {"treshold": 0.5}}, "unknown key 'inference.treshold' (did you mean 'threshold'?)"),
    ({"inference": {"tune": {"min_volume": [20]}}},
     "unknown key 'inference.tune.min_volume' (did you mean 'min_volume_mm3'?)"),
    ({"preprocess": {"skullstrip": {"bakend": "ants"}}},
     "unknown key 'preprocess.skullstrip.bakend' (did you mean 'backend'?)"),
    ({"training": {"defaults": {"epochs": -5}}}, "c.yaml: training.defaults.epochs must be an integer >= 1, got -5"),
    ({"training": {"defaults": {"epochs": "forty"}}},
     "training.defaults.epochs must be an integer >= 1, got 'forty'"),
    ({"training": {"defaults": {"epochs": 0}}}, "training.defaults.epochs must be an integer >= 1, got 0"),
    ({"training": {"experiments": {"upattllstm_gmd": {"epochs": 2.5}}}},
     "training.experiments.upattllstm_gmd.epochs must be an integer >= 1, got 2.5"),
    ({"inference": {"threshold": 7}}, "inference.threshold must be a number in (0, 1], got 7"),
    # the tuning's postprocess.json alone sets the candidate selection (a config's `score` had no scorer)
    ({"inference": {"selection": "score"}}, "c.yaml: 'inference.selection' is chosen by the tuning "
     "(postprocess.json), not set in the config: for candidate scoring set 'inference.tune.selection: score'"),
    ({"inference": {"presence_threshold": 0.4}}, "'inference.presence_threshold' is chosen by the tuning"),
    ({"inference": {"scorer": None}}, "'inference.scorer' is chosen by the tuning"),
    ({"training": {"defaults": {"lr": "1e-3"}}}, "training.defaults.lr must be a number > 0, got '1e-3' (text, not a number"),
    ({"training": {"defaults": {"batch_size": 0}}}, "training.defaults.batch_size must be an integer >= 1, got 0"),
    ({"training": {"defaults": {"fg_oversample": 1.5}}}, "training.defaults.fg_oversample must be a number in [0, 1]"),
    ({"training": {"experiments": {"x": {"protocol": "multicentrik"}}}},
     "training.experiments.x.protocol must be multicentric, monocentric[-<center>] or leave-center-out[-<center>]"),
    ({"preprocess": {"grid": {"spacing_mm": 0}}}, "preprocess.grid.spacing_mm must be null, a number > 0"),
    ({"centers": "ctrB"}, "centers must be a list"),
    # an nnU-Net experiment has its own keys (nnU-Net plans batch, patch and network itself)
    ({"training": {"experiments": {"nn": {"model": "nnunet", "protocol": "multicentric", "itrations": 5}}}},
     "unknown key 'training.experiments.nn.itrations' (did you mean 'iterations'?)"),
    ({"training": {"experiments": {"nn": {"model": "nnunet", "protocol": "multicentric", "batch_size": 2}}}},
     "unknown key 'training.experiments.nn.batch_size' (known: model, protocol, configuration, dataset_id"),
    ({"training": {"experiments": {"nn": {"model": "nnunet", "protocol": "multicentric", "configuration": "3d"}}}},
     "training.experiments.nn.configuration must be one of 2d, 3d_fullres, got '3d'"),
    ({"training": {"experiments": {"nn": {"model": "nnunet", "protocol": "multicentric", "dataset_id": 1000}}}},
     "training.experiments.nn.dataset_id must be an integer in [1, 999], got 1000"),
    ({"training": {"experiments": {"nn": {"model": "nnunet", "protocol": "multicentric",
                                          "dropout": {"schedule": "gradual"}}}}},
     "training.experiments.nn.dropout.schedule must be one of staircase, linear, cosine, fixed, none"),
])
def test_bad_config_is_one_line_naming_the_key(over, expected):
    msg = _problem(_with(over))
    assert len(msg.splitlines()) == 1 and expected in msg, msg


def test_several_problems_one_line_each():
    msg = _problem(_with({"centres": [], "inference": {"threshold": 7},
                          "training": {"defaults": {"epochs": 0, "batch_size": 0}}}))
    lines = msg.splitlines()
    assert len(lines) == 4 and all(line.startswith("c.yaml: ") for line in lines), msg
    assert lines[0] == "c.yaml: unknown key 'centres' (did you mean 'centers'?)"


def test_whole_config_needs_experiments_a_cli_file_need_not():
    assert "missing key 'training.experiments'" in _problem({"training": {"defaults": {}}})
    validate_config({"training": {"defaults": {"epochs": 3}}}, partial=True)


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "my.yaml"
    bad.write_text("training:\n  defaults: {epochs: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{bad}: line 3") and "not valid YAML" in msg
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        read_yaml(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="none.yaml: config file not found"):
        read_yaml(tmp_path / "none.yaml")


def test_preprocess_section_alone_is_checked_as_that_section(tmp_path):
    f = tmp_path / "pre.yaml"
    f.write_text("threads: 2\nn4: {enabled: false}\n")
    assert load_config(f, alone="preprocess") == {"threads": 2, "n4": {"enabled": False}}
    f.write_text("thread: 2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'preprocess.thread' \(did you mean 'threads'\?\)"):
        load_config(f, alone="preprocess")
    f.write_text("preprocess: {threads: 0}\n")  # a workflow config: its section is checked
    with pytest.raises(ConfigError, match="preprocess.threads must be an integer >= 1 or null, got 0"):
        load_config(f, alone="preprocess")


# ------------------------------------------------------------------ Snakemake, before any job
@pytest.mark.parametrize("over, args, expected", [
    (None, ["--config", "centres=[ctrB]"], "config: unknown key 'centres' (did you mean 'centers'?)"),
    ({"training": {"defaults": {"epochs": -5}}}, [], "config: training.defaults.epochs must be an integer >= 1, got -5"),
    ({"inference": {"threshold": 7}}, [], "config: inference.threshold must be a number in (0, 1], got 7"),
    ({"training": {"experiments": {"a": {"model": "nnunet", "protocol": "multicentric", "dataset_id": 7},
                                   "b": {"model": "nnunet", "protocol": "multicentric", "dataset_id": 7}}}}, [],
     "experiments 'a' and 'b' get the same nnU-Net dataset id 7: give one of them another "
     "training.experiments.<name>.dataset_id"),
])
def test_snakemake_dry_run_stops_with_the_line(tmp_path, over, args, expected):
    files = [str(REPO / "config" / "config.yaml")]
    if over:
        (tmp_path / "over.yaml").write_text(yaml.safe_dump(over))
        files.append(str(tmp_path / "over.yaml"))
    cmd = [sys.executable, "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"), "--directory",
           str(tmp_path / "run"), "--configfile", *files, "--cores", "1", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    text = res.stdout + res.stderr
    assert res.returncode != 0, text[-3000:]
    assert expected in text.splitlines() and "Traceback" not in text, text[-3000:]
    assert not (tmp_path / "run" / "results").exists()


# ------------------------------------------------------------------ CLIs: exit 2, one line, nothing written
def _cli(capsys, *argv) -> tuple[int, list[str]]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("epochs", [0, -5, "forty"])
def test_train_rejects_bad_epochs_before_reading_data(tmp_path, capsys, epochs):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"training": {"defaults": {"epochs": epochs},
                                                 "experiments": {"e": {"protocol": "multicentric"}}}}))
    rc, err = _cli(capsys, "train", tmp_path / "no_data", tmp_path / "no_splits.tsv", tmp_path / "out",
                   "--config", conf, "--experiment", "e")
    assert rc == 2 and len(err) == 1, err
    assert err[0] == f"thrombseg train: error: {conf}: training.defaults.epochs must be an integer >= 1, got {epochs!r}"
    assert not (tmp_path / "out").exists()


def test_train_unknown_experiment_is_one_line(tmp_path, capsys):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"training": {"experiments": {"e": {"protocol": "multicentric"}}}}))
    rc, err = _cli(capsys, "train", tmp_path / "d", tmp_path / "s.tsv", tmp_path / "out", "--config", conf,
                   "--experiment", "f")
    assert rc == 2 and err == [f"thrombseg train: error: {conf}: experiment 'f' not in training.experiments (e)"]
    assert not (tmp_path / "out").exists()
    conf.write_text(yaml.safe_dump({"training": {"experiments": {"nn": {"model": "nnunet", "protocol": "multicentric"}}}}))
    rc, err = _cli(capsys, "train", tmp_path / "d", tmp_path / "s.tsv", tmp_path / "out", "--config", conf,
                   "--experiment", "nn")
    assert rc == 2 and len(err) == 1 and "is an nnU-Net baseline (model: nnunet)" in err[0], err
    assert not (tmp_path / "out").exists()


def test_inference_and_preprocess_clis_check_their_config(tmp_path, capsys):
    work = tmp_path / "wf.yaml"
    work.write_text("inference: {threshold: 7}\n")
    alone = tmp_path / "pre.yaml"
    alone.write_text("skullstrip: {bakend: ants}\n")
    out = tmp_path / "out"
    nowhere = [tmp_path / "m.pt", tmp_path / "l.json"]
    cases = [
        (("predict", out, "--swi", tmp_path / "swi.nii.gz", "--model", nowhere[0], "--landmarks", nowhere[1],
          "--config", alone), f"{alone}: unknown key 'preprocess.skullstrip.bakend' (did you mean 'backend'?)"),
        (("predict", out, "--swi", tmp_path / "swi.nii.gz", "--model", nowhere[0], "--landmarks", nowhere[1],
          "--config", work), f"{work}: inference.threshold must be a number in (0, 1], got 7"),
        (("predict-harmonized", tmp_path, "p1", "c", nowhere[0], out, "--config", work),
         f"{work}: inference.threshold must be a number in (0, 1], got 7"),
        (("tune-postprocess", tmp_path, tmp_path / "splits.tsv", nowhere[0], out / "t.json", "--config", work),
         f"{work}: inference.threshold must be a number in (0, 1], got 7"),
        (("preprocess", "subject", tmp_path, "p1", out, "--config", alone),
         f"{alone}: unknown key 'preprocess.skullstrip.bakend' (did you mean 'backend'?)"),
    ]
    for argv, line in cases:
        rc, err = _cli(capsys, *argv)
        assert rc == 2 and err == [f"thrombseg {argv[0]}: error: {line}"], (argv[0], err)
        assert not out.exists()


# ------------------------------------------------------------------ one source of defaults
# The code's models hold the defaults of preprocess (DEFAULT_CONFIG), inference (InferenceConfig) and
# training options (TrainConfig); the schema types exactly their keys and states none of those
# defaults. The schema's own defaults (workflow keys with no code model) must equal the functions'.
def _schema_keys(node: dict, root: dict) -> dict:
    """{key: nested keys or None} of a schema object, references and nested objects followed."""
    from thrombseg.config import _resolve

    node = _resolve(node, root)
    out = {}
    for key, sub in (node.get("properties") or {}).items():
        sub = _resolve(sub, root)
        assert "default" not in sub, f"schema states a default for {key!r}: the code holds it"
        out[key] = _schema_keys(sub, root) if "properties" in sub else None
    return out


def _code_keys(d: dict) -> dict:
    return {k: _code_keys(v) if isinstance(v, dict) and v else None for k, v in d.items()}


def test_preprocess_defaults_live_in_code_and_the_schema_types_each():
    from thrombseg.config import schema
    from thrombseg.preprocessing.settings import DEFAULT_CONFIG

    root = schema()
    assert _schema_keys(root["properties"]["preprocess"], root) == _code_keys(DEFAULT_CONFIG)
    validate_config(copy.deepcopy(DEFAULT_CONFIG), "DEFAULT_CONFIG", section="preprocess")
    # config/config.yaml changes only the thread count; its other preprocess values restate the code's
    shipped = BASE["preprocess"]
    assert shipped["threads"] == 1 and DEFAULT_CONFIG["threads"] == 2
    for key, value in shipped.items():
        if key != "threads":
            expect = DEFAULT_CONFIG[key]
            assert (value == {k: expect[k] for k in value}) if isinstance(value, dict) else value == expect, key


def test_inference_and_training_defaults_live_in_code_and_the_schema_types_each():
    import dataclasses

    from thrombseg.config import schema
    from thrombseg.inference.settings import InferenceConfig
    from thrombseg.training.config import AugmentConfig, DropoutConfig, HardNegativeConfig, TrainConfig

    root = schema()
    # the fields the tuning alone sets (postprocess.json) are refused in the config, not typed
    tuned_only = {"selection", "presence_threshold", "scorer"}
    assert set(root["properties"]["inference"]["x-tuned-only"]) == tuned_only
    names = [f.name for f in dataclasses.fields(InferenceConfig) if f.name not in tuned_only]
    assert set(_schema_keys(root["properties"]["inference"], root)) == {*names, "tune"}
    validate_config({k: getattr(InferenceConfig(), k) for k in names}, "InferenceConfig", section="inference")
    train = _schema_keys(root["$defs"]["train_options"], root)
    assert set(train) == {f.name for f in dataclasses.fields(TrainConfig)} - {"target"}  # target: set by the workflow
    assert set(train["dropout"]) == {f.name for f in dataclasses.fields(DropoutConfig)}
    assert set(train["augment"]) == {f.name for f in dataclasses.fields(AugmentConfig)}
    assert set(train["hard_negatives"]) == {f.name for f in dataclasses.fields(HardNegativeConfig)}


def test_schema_defaults_equal_the_functions_they_feed():
    import inspect

    from thrombseg.config import schema
    from thrombseg.evaluation.aggregate import write_tables
    from thrombseg.synth import generate_cohort

    props = schema()["properties"]
    cohort = inspect.signature(generate_cohort).parameters
    for key in ("n_per_center", "seed", "size", "negative_share"):
        assert props["synthetic"]["properties"][key]["default"] == cohort[key].default, key
    assert props["evaluation"]["properties"]["n_boot"]["default"] == inspect.signature(write_tables).parameters[
        "n_boot"].default
    # keys reported dead earlier are gone from the schema and the shipped configs
    assert "ingest" not in props and "min_overlap_voxels" not in props["evaluation"]["properties"]
    assert "ingest" not in BASE and "min_overlap_voxels" not in BASE.get("evaluation", {})
