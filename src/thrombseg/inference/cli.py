"""``thrombseg predict`` / ``predict-harmonized`` / ``tune-postprocess`` (hooked into thrombseg.cli).

    thrombseg predict OUT_DIR [--swi F] [--phase F] [--t2star F] [--dwi F] [--adc F] [--flair F] [--t1 F]
        (--model M.pt --landmarks L.json [--infarct-model M.pt] [--config config.yaml] | --results DIR
        [--experiment E]) [--postprocess P.json] [--subject ID] [--tta] [--device auto|cpu|cuda]
        [--threads N] [--keep-work]
    thrombseg predict-harmonized HARMONIZED_DIR SUBJECT CENTER MODEL OUT_DIR [--infarct-model M.pt]
        [--subsets all|leave-one-out|full] [--experiment E] [--config config.yaml] [--postprocess P.json]
    thrombseg tune-postprocess HARMONIZED_DIR SPLITS MODEL OUT_JSON [--infarct-model M.pt] [--config config.yaml]

``--results DIR`` takes the files of a finished workflow run (a thrombseg experiment's; nnU-Net baselines
predict through the workflow): ``DIR/models/<experiment>/thrombus/model.pt``,
the infarct model of the experiment's protocol, the landmarks of that protocol (``DIR/harmonization/<protocol>/landmarks.json``), the exact
preprocessing/inference settings of that run and the post-processing settings chosen on its validation
patients (``postprocess.json`` beside the model); explicit options override each of them.
Bad input exits with code 2 and one line naming the file or sequence.

The commands import their pipelines (torch, ANTs, pandas) when they run, so that ``thrombseg --help``
stays fast; this module itself reads only the torch-free base layer, the config reader and the plan.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import is_workflow_config, load_config, read_yaml
from ..core.errors import UserError, positive_int
from ..core.fs import add_overwrite_option, check_output_file
from ..core.layout import HARMONIZATION_DIR, INFARCT_DIR, Layout
from ..core.sequences import SEQUENCES
from ..plan import is_nnunet, nnunet_settings

SUMMARY_KEYS = ("subject", "sequences_used", "thrombus_present", "presence_prob", "thrombus_volume_mm3",
                "thrombus_n_components", "infarct_volume_mm3", "device", "timings_s")


def results_files(results, experiment: str | None = None) -> dict:
    """The model, infarct model, landmarks and settings of a workflow results folder.

    Without ``experiment``: the only thrombseg model there. An nnU-Net baseline experiment (``model:
    nnunet`` in the run's config) gives its final checkpoint as ``model`` and ``kind`` ``nnunet``.

    Returns:
        dict with ``model``, ``kind`` (``thrombseg`` | ``nnunet``), ``infarct_model`` (or None),
        ``landmarks``, ``preprocess`` (dict or None), ``inference`` (dict), ``experiment``,
        ``postprocess`` (the tuned settings' file, or None).
    """
    if not Path(results).is_dir():
        raise UserError(f"{Path(results)}: results folder not found")
    layout = Layout(results)
    conf = _run_config(layout)
    trained = layout.trained_experiments()
    if experiment is None:
        if len(trained) != 1:
            raise UserError(f"{layout.models()}: give --experiment, one of {trained or 'none trained yet'}")
        experiment = trained[0]
    nnunet = nnunet_checkpoint(layout, conf, experiment)
    model = Path(nnunet or layout.thrombus_model(experiment))
    if not model.is_file():
        raise UserError(f"{model}: thrombus model of experiment {experiment!r} not found "
                        f"(trained: {_trained(layout, conf)})")
    tuned = Path(layout.tuned_postprocess(experiment))  # settings chosen on the validation patients
    protocol = _protocol(conf, experiment)
    return {"model": model, "kind": "nnunet" if nnunet else "thrombseg",
            "infarct_model": _infarct_model(layout, protocol),
            "landmarks": _landmarks(layout, protocol), "preprocess": _preprocess_used(layout, conf),
            "inference": conf.get("inference") or {}, "experiment": experiment,
            "postprocess": tuned if tuned.is_file() else None}


def nnunet_checkpoint(layout: Layout, conf: dict, experiment: str) -> str | None:
    """The final nnU-Net checkpoint of an nnU-Net experiment of the run's config (None for another)."""
    training = conf.get("training") or {}
    if not is_nnunet((training.get("experiments") or {}).get(experiment)):
        return None
    s = nnunet_settings(training, experiment)
    return layout.nnunet_checkpoint(Layout.nnunet_dataset(s["dataset_id"], experiment), s["trainer"], s["configuration"])


def trained_experiments(results) -> list[str]:
    """The experiments of a results folder with a trained thrombus model: thrombseg's and nnU-Net's."""
    layout = Layout(results)
    return _trained(layout, _run_config(layout))


def _run_config(layout: Layout) -> dict:
    """The run's config as the workflow recorded it (empty when not there)."""
    provenance = Path(layout.provenance_config())
    return read_yaml(provenance) if provenance.is_file() else {}


def _trained(layout: Layout, conf: dict) -> list[str]:
    nnunet = [e for e in ((conf.get("training") or {}).get("experiments") or {})
              if (f := nnunet_checkpoint(layout, conf, e)) and Path(f).is_file()]
    return sorted({*layout.trained_experiments(), *nnunet})


def _protocol(conf: dict, experiment: str) -> str | None:
    """The experiment's protocol id in the run's config (None when the config is not there)."""
    protocol = (((conf.get("training") or {}).get("experiments") or {}).get(experiment) or {}).get("protocol")
    return str(protocol) if protocol else None


def _landmarks(layout: Layout, protocol: str | None) -> Path:
    """The landmarks of the experiment's protocol (what its patients were harmonized with), else the
    only ones there."""
    if protocol:
        return Path(layout.landmarks(protocol))
    fitted = sorted(Path(layout.root, HARMONIZATION_DIR).glob("*/landmarks.json"))
    if len(fitted) != 1:
        raise UserError(f"{Path(layout.root, HARMONIZATION_DIR)}: {len(fitted)} landmark files and no run config "
                        "naming the experiment's protocol: give --landmarks")
    return fitted[0]


def _infarct_model(layout: Layout, protocol: str | None) -> Path | None:
    """The infarct model of the experiment's protocol (what rule predict uses), else the only one there."""
    if protocol and Path(layout.infarct_model(str(protocol))).is_file():
        return Path(layout.infarct_model(str(protocol)))
    trained = layout.trained_infarct_models()
    if len(trained) > 1:
        raise UserError(f"{Path(layout.models(), INFARCT_DIR)}: several infarct models, give --infarct-model")
    return trained[0] if trained else None


def _preprocess_used(layout: Layout, conf: dict) -> dict | None:
    """The resolved preprocessing config actually used (defaults of that code version included)."""
    record = next(iter(sorted(Path(layout.preprocessed()).glob("*/*_preproc.json"))), None)
    return json.loads(record.read_text()).get("config") if record else conf.get("preprocess")


def _inference_config(section: dict | None, args, tuned=None):
    """Settings of a config section (+ a tuning file), then the command line's --tta / --device."""
    from .predict import inference_settings

    overrides = {"subsets": "full"}
    if getattr(args, "tta", False):
        overrides["tta_flip"] = True
    if getattr(args, "device", None):
        overrides["device"] = args.device
    return inference_settings(section, tuned, **overrides)  # InferenceError names a bad or unknown key


def _preprocess_settings(args, conf: dict, found: dict) -> dict:
    """``--config``'s preprocess: section (or the whole file when it holds only that), else the results
    folder's; ``--threads`` on top."""
    if args.config:
        preprocess = dict(conf.get("preprocess") or {}) if is_workflow_config(conf) else dict(conf)
    else:
        preprocess = dict(found.get("preprocess") or {})
    if args.threads:
        preprocess["threads"] = args.threads
    return preprocess


def _cmd_predict(args) -> int:
    from .patient import predict_patient

    images = {s: getattr(args, s) for s in SEQUENCES if getattr(args, s)}
    found = results_files(args.results, args.experiment) if args.results else {}
    if found.get("kind") == "nnunet" and not args.model:
        raise UserError(f"{found['model']}: experiment {found['experiment']!r} is an nnU-Net baseline; "
                        "thrombseg predict runs thrombseg models (the workflow's rule nnunet_predict and "
                        "benchmarks/compare.py predict with nnU-Net)")
    model = args.model or found.get("model")
    landmarks = args.landmarks or found.get("landmarks")
    if not model or not landmarks:
        raise UserError("give --model and --landmarks, or --results DIR of a workflow run")
    conf = load_config(args.config, alone="preprocess") if args.config else {}
    tuned = args.postprocess or (None if args.config else found.get("postprocess"))
    icfg = _inference_config(conf.get("inference") if args.config else found.get("inference"), args, tuned)
    summary = predict_patient(images, args.out_dir, model, landmarks, args.infarct_model or found.get("infarct_model"),
                              _preprocess_settings(args, conf, found), icfg, subject=args.subject,
                              keep_work=args.keep_work, overwrite=args.overwrite)
    print(json.dumps({k: summary[k] for k in SUMMARY_KEYS} | {"out_dir": str(args.out_dir)}, indent=1))
    return 0


def _cmd_predict_harmonized(args) -> int:
    from .predict import predict_subject

    conf = load_config(args.config) if args.config else {}
    icfg = _inference_config(conf.get("inference"), args, args.postprocess)
    icfg.subsets = args.subsets
    table = predict_subject(args.harmonized_dir, args.subject, args.center, args.model, args.infarct_model,
                            args.out_dir, args.experiment, icfg)
    columns = [c for c in ("sequence_set", "dice", "detected", "n_fp_components") if c in table.columns]
    print(table[columns].to_string(index=False))
    return 0


def _validation_subjects(splits: Path) -> dict[str, str]:
    """``{subject: center}`` of the 'val' rows of a splits table; UserError names a bad table."""
    import pandas as pd

    if not splits.is_file():
        raise UserError(f"{splits}: splits table not found")
    table = pd.read_csv(splits, sep="\t", dtype=str, keep_default_na=False)
    if not {"subject", "center", "split"} <= set(table.columns):
        raise UserError(f"{splits}: needs the columns subject, center, split")
    val = table[table["split"] == "val"]
    if val.empty:
        raise UserError(f"{splits}: no 'val' patients to tune on")
    return dict(zip(val["subject"], val["center"]))


def _cmd_tune(args) -> int:
    from .tune import tune_subjects

    section = (load_config(args.config).get("inference") or {}) if args.config else {}
    check_output_file(args.out_json, args.overwrite, [args.splits, args.model])
    result = tune_subjects(args.harmonized_dir, _validation_subjects(args.splits), args.model, args.infarct_model,
                           args.out_json, section)
    print(json.dumps({"chosen": result["chosen"], "subjects": result["subjects"], "out": str(args.out_json)}))
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
    s.add_argument("--landmarks", type=Path, help="the workflow's harmonization/<protocol>/landmarks.json")
    s.add_argument("--config", type=Path, help="workflow config.yaml (preprocess: and inference: sections)")
    s.add_argument("--results", type=Path, help="a workflow results folder: take model, landmarks, settings")
    s.add_argument("--experiment", help="experiment under --results (default: the only one)")
    s.add_argument("--subject", default="patient", help="id used in output file names")
    s.add_argument("--postprocess", type=Path, metavar="JSON",
                   help="post-processing settings chosen on validation patients (thrombseg tune-postprocess)")
    s.add_argument("--tta", action="store_true", help="average with the left-right mirrored prediction")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
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
