# Report: paper figures per experiment and across experiments, paper tables (TSV/Markdown/LaTeX),
# provenance (resolved config, versions, git commit, sheet checksum) and BIDS-derivatives
# dataset_description.json files. Everything here is cheap: localrules.
from thrombseg.report.figures import experiment_labels as _experiment_labels

FIGURES = f"{RESULTS}/figures"
TABLES = f"{RESULTS}/tables"
REPORT_EXPERIMENTS = [e for e in EXPERIMENTS if _test_subjects(e)]
EXPERIMENT_LABELS = _experiment_labels(config["training"])
REPORT_N_BOOT = config["evaluation"].get("n_boot", 2000)
# Image-derivative folders that get a BIDS-derivatives dataset_description.json.
DERIVATIVES = {
    "preprocessed": "thrombseg preprocessed images (skull-stripped, co-registered, bias-corrected)",
    "harmonized": "thrombseg site-harmonized arrays on the reference grid",
    "predictions": "thrombseg thrombus and infarct predictions",
}


def _fig(name, caption, subcategory="{experiment}", experiment="{experiment}"):
    return report(
        f"{FIGURES}/{{experiment}}/{name}.png",
        category="5. Figures",
        subcategory=subcategory,
        caption=f"../report/{caption}.rst",
        labels={"figure": name.replace("_", " "), "experiment": experiment},
    )


def _test_centers(experiment):
    return sorted({CENTER_OF[s] for s in _test_subjects(experiment)})


rule figures:
    input:
        per_subject=rules.evaluate.output.per_subject,
        per_sequence_set=rules.evaluate.output.per_sequence_set,
        predictions=lambda w: expand(rules.predict.output, experiment=w.experiment, subject=_test_subjects(w.experiment)),
        harmonized=lambda w: expand(rules.harmonize.output, subject=_test_subjects(w.experiment)),
    output:
        per_center_dice=_fig("per_center_dice", "per_center_dice"),
        per_center_dice_pdf=f"{FIGURES}/{{experiment}}/per_center_dice.pdf",
        per_center_detection=_fig("per_center_detection", "per_center_detection"),
        per_center_detection_pdf=f"{FIGURES}/{{experiment}}/per_center_detection.pdf",
        missing_sequences=_fig("missing_sequences", "missing_sequences"),
        missing_sequences_pdf=f"{FIGURES}/{{experiment}}/missing_sequences.pdf",
        size_vs_detection=_fig("size_vs_detection", "size_vs_detection"),
        size_vs_detection_pdf=f"{FIGURES}/{{experiment}}/size_vs_detection.pdf",
        # One PNG + PDF per center (best / median / worst patient): a subcategory per center.
        overlays=report(
            directory(f"{FIGURES}/{{experiment}}/overlays"),
            patterns=["{center}.png"],
            category="5. Figures",
            subcategory="{center}",
            caption="../report/overlays.rst",
            labels={"figure": "overlays", "experiment": "{experiment}"},
        ),
    params:
        experiment=lambda w: w.experiment,
        centers=lambda w: _test_centers(w.experiment),
        harmonized_root=f"{RESULTS}/harmonized",
        predictions_root=lambda w: f"{RESULTS}/predictions/{w.experiment}",
        labels=EXPERIMENT_LABELS,
        n_boot=REPORT_N_BOOT,
    localrule: True
    log:
        f"{LOGS}/figures/{{experiment}}.log",
    script:
        "../scripts/figures.py"


def _all_fig(name, caption):
    return report(
        f"{FIGURES}/{name}.png",
        category="5. Figures",
        subcategory="All experiments",
        caption=f"../report/{caption}.rst",
        labels={"figure": name.replace("_", " "), "experiment": "all"},
    )


rule figures_all:
    input:
        per_subject=expand(rules.evaluate.output.per_subject, experiment=REPORT_EXPERIMENTS),
        per_sequence_set=expand(rules.evaluate.output.per_sequence_set, experiment=REPORT_EXPERIMENTS),
    output:
        ablation=_all_fig("ablation_dropout", "ablation_dropout"),
        ablation_pdf=f"{FIGURES}/ablation_dropout.pdf",
        missing_sequences=_all_fig("missing_sequences_experiments", "missing_sequences_experiments"),
        missing_sequences_pdf=f"{FIGURES}/missing_sequences_experiments.pdf",
        per_center_dice=_all_fig("per_center_dice_experiments", "per_center_dice_experiments"),
        per_center_dice_pdf=f"{FIGURES}/per_center_dice_experiments.pdf",
        per_center_detection=_all_fig("per_center_detection_experiments", "per_center_detection_experiments"),
        per_center_detection_pdf=f"{FIGURES}/per_center_detection_experiments.pdf",
    params:
        labels=EXPERIMENT_LABELS,
        n_boot=REPORT_N_BOOT,
    localrule: True
    log:
        f"{LOGS}/figures/all_experiments.log",
    script:
        "../scripts/figures.py"


rule tables:
    input:
        per_subject=expand(rules.evaluate.output.per_subject, experiment=REPORT_EXPERIMENTS),
        per_sequence_set=expand(rules.evaluate.output.per_sequence_set, experiment=REPORT_EXPERIMENTS),
    output:
        per_center=report(
            f"{TABLES}/per_center.tsv",
            category="6. Tables",
            caption="../report/table_per_center.rst",
            labels={"table": "per center"},
        ),
        per_center_md=f"{TABLES}/per_center.md",
        per_center_tex=f"{TABLES}/per_center.tex",
        per_sequence_set=report(
            f"{TABLES}/per_sequence_set.tsv",
            category="6. Tables",
            caption="../report/table_per_sequence_set.rst",
            labels={"table": "per sequence set"},
        ),
        per_sequence_set_md=f"{TABLES}/per_sequence_set.md",
        per_sequence_set_tex=f"{TABLES}/per_sequence_set.tex",
    params:
        n_boot=REPORT_N_BOOT,
    localrule: True
    log:
        f"{LOGS}/tables.log",
    script:
        "../scripts/tables.py"


# Reruns whenever the resolved config (params) or the sample sheet (input) changes.
rule provenance:
    input:
        sheet=SHEET,
    output:
        config=f"{RESULTS}/provenance/config.yaml",
        provenance=report(
            f"{RESULTS}/provenance/provenance.json",
            category="7. Provenance",
            caption="../report/provenance.rst",
        ),
        descriptions=[f"{RESULTS}/{d}/dataset_description.json" for d in DERIVATIVES],
    params:
        cfg=config,
        derivatives=DERIVATIVES,
        repo=workflow.basedir,
    localrule: True
    log:
        f"{LOGS}/provenance.log",
    script:
        "../scripts/provenance.py"


ALL_TARGETS += rules.provenance.output
if REPORT_EXPERIMENTS:
    ALL_TARGETS += expand(
        [rules.figures.output.per_center_dice, rules.figures.output.overlays], experiment=REPORT_EXPERIMENTS
    )
    ALL_TARGETS += [rules.figures_all.output.ablation, rules.tables.output.per_center]
