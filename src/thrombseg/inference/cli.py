"""``thrombseg predict`` / ``predict-harmonized`` / ``tune-postprocess`` (hooked into thrombseg.cli).

    thrombseg predict OUT_DIR [--swi F] [--phase F] [--t2star F] [--dwi F] [--adc F] [--flair F] [--t1 F]
        (--model M.pt --landmarks L.json [--infarct-model M.pt] [--config config.yaml] | --results DIR
        [--experiment E]) [--postprocess P.json] [--subject ID] [--tta] [--device auto|cpu|cuda]
        [--threads N] [--keep-work]
    thrombseg predict-harmonized HARMONIZED_DIR SUBJECT CENTER MODEL OUT_DIR [--infarct-model M.pt]
        [--subsets all|leave-one-out|full] [--experiment E] [--config config.yaml] [--postprocess P.json]
    thrombseg tune-postprocess HARMONIZED_DIR SPLITS MODEL OUT_JSON [--infarct-model M.pt] [--config config.yaml]

``--results DIR`` takes the files of a finished workflow run: ``DIR/models/<experiment>/thrombus/model.pt``,
the infarct model of the experiment's protocol, ``DIR/harmonization/landmarks.json``, the exact
preprocessing/inference settings of that run and the post-processing settings chosen on its validation
patients (``postprocess.json`` beside the model); explicit options override each of them.
Bad input exits with code 2 and one line naming the file or sequence.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.fs import add_overwrite_option, check_output_file

SEQUENCES = ("swi", "phase", "t2star", "dwi", "adc", "flair", "t1")  # = sheet.SEQUENCES; literal keeps --help light


def _user_error(exc):
    from ..core.errors import UserError

    return UserError(str(exc))


def _read_yaml(path) -> dict:
    """A YAML mapping, unchecked (a results folder's provenance/config.yaml); ConfigError names the file."""
    from ..config import read_yaml

    return read_yaml(path)


def _read_config(path, alone: str | None = None) -> dict:
    """A ``--config`` file checked against the workflow schema (ConfigError: one line per problem)."""
    from ..config import load_config

    return load_config(path, alone=alone)


def results_files(results, experiment: str | None = None) -> dict:
    """The model, infarct model, landmarks and settings of a workflow results folder.

    Returns:
        dict with ``model``, ``infarct_model`` (or None), ``landmarks``, ``preprocess`` (dict or None),
        ``inference`` (dict), ``experiment``, ``postprocess`` (the tuned settings' file, or None).
    """
    root = Path(results)
    if not root.is_dir():
        raise _user_error(f"{root}: results folder not found")
    conf_path = root / "provenance" / "config.yaml"
    conf = _read_yaml(conf_path) if conf_path.is_file() else {}
    exps = sorted(p.parent.parent.name for p in (root / "models").glob("*/thrombus/model.pt"))
    if experiment is None:
        if len(exps) != 1:
            raise _user_error(f"{root / 'models'}: give --experiment, one of {exps or 'none trained yet'}")
        experiment = exps[0]
    model = root / "models" / experiment / "thrombus" / "model.pt"
    if not model.is_file():
        raise _user_error(f"{model}: thrombus model of experiment {experiment!r} not found (trained: {exps})")
    # the infarct model of the experiment's protocol (what rule predict uses), else the only one there
    protocol = (((conf.get("training") or {}).get("experiments") or {}).get(experiment) or {}).get("protocol")
    infarcts = sorted((root / "models" / "infarct").glob("*/model.pt"))
    infarct = root / "models" / "infarct" / str(protocol) / "model.pt" if protocol else None
    if infarct is None or not infarct.is_file():
        infarct = infarcts[0] if len(infarcts) == 1 else None
        if infarct is None and infarcts:
            raise _user_error(f"{root / 'models' / 'infarct'}: several infarct models, give --infarct-model")
    # the resolved preprocessing config actually used (defaults of that code version included)
    pre = next(iter(sorted((root / "preprocessed").glob("*/*_preproc.json"))), None)
    preprocess = json.loads(pre.read_text()).get("config") if pre else conf.get("preprocess")
    tuned = model.parent / "postprocess.json"  # settings chosen on the validation patients
    return {"model": model, "infarct_model": infarct, "landmarks": root / "harmonization" / "landmarks.json",
            "preprocess": preprocess, "inference": conf.get("inference") or {}, "experiment": experiment,
            "postprocess": tuned if tuned.is_file() else None}


def _inference_config(settings: dict, a, tuned=None):
    """Settings of a config section (+ a tuning file), then the command line's --tta / --device."""
    from .predict import inference_settings

    over = {"subsets": "full"}
    if getattr(a, "tta", False):
        over["tta_flip"] = True
    if getattr(a, "device", None):
        over["device"] = a.device
    return inference_settings(settings, tuned, **over)  # InferenceError names a bad or unknown key


def _cmd_predict(a) -> int:
    from .patient import predict_patient

    images = {s: getattr(a, s) for s in SEQUENCES if getattr(a, s)}
    found = results_files(a.results, a.experiment) if a.results else {}
    model = a.model or found.get("model")
    landmarks = a.landmarks or found.get("landmarks")
    if not model or not landmarks:
        raise _user_error("give --model and --landmarks, or --results DIR of a workflow run")
    conf = _read_config(a.config, alone="preprocess") if a.config else {}
    if a.config:  # a workflow config (its preprocess: section) or a file holding only that section
        from ..config import is_workflow_config

        is_workflow = is_workflow_config(conf)
        preprocess = dict(conf.get("preprocess") or {}) if is_workflow else dict(conf)
    else:
        preprocess = dict(found.get("preprocess") or {})
    if a.threads:
        preprocess["threads"] = a.threads
    tuned = a.postprocess or (None if a.config else found.get("postprocess"))
    icfg = _inference_config(conf.get("inference") if a.config else found.get("inference"), a, tuned)
    s = predict_patient(images, a.out_dir, model, landmarks, a.infarct_model or found.get("infarct_model"),
                        preprocess, icfg, subject=a.subject, keep_work=a.keep_work, overwrite=a.overwrite)
    print(json.dumps({k: s[k] for k in ("subject", "sequences_used", "thrombus_volume_mm3", "thrombus_n_components",
                                        "infarct_volume_mm3", "device", "timings_s")} | {"out_dir": str(a.out_dir)},
                     indent=1))
    return 0


def _cmd_predict_harmonized(a) -> int:
    from .predict import predict_subject

    conf = _read_config(a.config) if a.config else {}
    icfg = _inference_config(conf.get("inference"), a, a.postprocess)
    icfg.subsets = a.subsets
    df = predict_subject(a.harmonized_dir, a.subject, a.center, a.model, a.infarct_model, a.out_dir,
                         a.experiment, icfg)
    cols = [c for c in ("sequence_set", "dice", "detected", "n_fp_components") if c in df.columns]
    print(df[cols].to_string(index=False))
    return 0


def _cmd_tune(a) -> int:
    import pandas as pd

    from .tune import tune_subjects

    section = (_read_config(a.config).get("inference") or {}) if a.config else {}
    check_output_file(a.out_json, a.overwrite, [a.splits, a.model])
    if not a.splits.is_file():
        raise _user_error(f"{a.splits}: splits table not found")
    sp = pd.read_csv(a.splits, sep="\t", dtype=str, keep_default_na=False)
    if not {"subject", "center", "split"} <= set(sp.columns):
        raise _user_error(f"{a.splits}: needs the columns subject, center, split")
    val = sp[sp["split"] == "val"]
    if val.empty:
        raise _user_error(f"{a.splits}: no 'val' patients to tune on")
    r = tune_subjects(a.harmonized_dir, dict(zip(val["subject"], val["center"])), a.model, a.infarct_model,
                      a.out_json, section)
    print(json.dumps({"chosen": r["chosen"], "subjects": r["subjects"], "out": str(a.out_json)}))
    return 0


def add_subparsers(subparsers) -> None:
    """Hook for :mod:`thrombseg.cli`."""
    what = "predict one new patient from raw NIfTIs (any subset of the model's sequences)"
    s = subparsers.add_parser("predict", help=what, description=what + "; masks on the reference grid and "
                              "in each input's own space (OUT_DIR/native/)")
    s.add_argument("out_dir", type=Path, help="the patient's output folder")
    for seq in SEQUENCES:
        s.add_argument(f"--{seq}", type=Path, metavar="NIFTI", help=f"{seq} image")
    s.add_argument("--model", type=Path, help="thrombus model.pt")
    s.add_argument("--infarct-model", type=Path, help="infarct model.pt (guides post-processing)")
    s.add_argument("--landmarks", type=Path, help="the workflow's harmonization/landmarks.json")
    s.add_argument("--config", type=Path, help="workflow config.yaml (preprocess: and inference: sections)")
    s.add_argument("--results", type=Path, help="a workflow results folder: take model, landmarks, settings")
    s.add_argument("--experiment", help="experiment under --results (default: the only one)")
    s.add_argument("--subject", default="patient", help="id used in output file names")
    s.add_argument("--postprocess", type=Path, metavar="JSON",
                   help="post-processing settings chosen on validation patients (thrombseg tune-postprocess)")
    s.add_argument("--tta", action="store_true", help="average with the left-right mirrored prediction")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    from ..core.errors import positive_int

    s.add_argument("--threads", type=positive_int, help="CPU threads (ANTs and torch)")
    s.add_argument("--keep-work", action="store_true", help="keep ingest/preprocessed/harmonized under OUT_DIR/work")
    add_overwrite_option(s)
    s.set_defaults(func=_cmd_predict)

    s = subparsers.add_parser("predict-harmonized", help="predict a harmonized workflow patient, every sequence subset")
    s.add_argument("harmonized_dir", type=Path)
    s.add_argument("subject")
    s.add_argument("center")
    s.add_argument("model", type=Path)
    s.add_argument("out_dir", type=Path)
    s.add_argument("--infarct-model", type=Path)
    s.add_argument("--subsets", choices=["all", "leave-one-out", "full"], default="full")
    s.add_argument("--experiment", default="")
    s.add_argument("--config", type=Path, help="workflow config.yaml (its inference: section)")
    s.add_argument("--postprocess", type=Path, metavar="JSON", help="tuned post-processing settings")
    s.add_argument("--tta", action="store_true")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    s.set_defaults(func=_cmd_predict_harmonized)

    what = "choose post-processing settings on the validation patients of a splits table"
    s = subparsers.add_parser("tune-postprocess", help=what, description=what + " (the config's inference.tune grid)")
    s.add_argument("harmonized_dir", type=Path)
    s.add_argument("splits", type=Path, help="splits table (subject, center, split): its 'val' rows are used")
    s.add_argument("model", type=Path, help="thrombus model.pt")
    s.add_argument("out_json", type=Path)
    add_overwrite_option(s, file=True)
    s.add_argument("--infarct-model", type=Path)
    s.add_argument("--config", type=Path, help="workflow config.yaml (its inference: section and tune: grid)")
    s.set_defaults(func=_cmd_tune)
