# Report: paper figures per experiment and across experiments, paper tables (TSV/Markdown/LaTeX),
# provenance (resolved config, versions, git commit, sheet checksum) and BIDS-derivatives
# dataset_description.json files. Everything here is cheap: localrules.
rule figures:
    conda:
        "../envs/report.yaml"
    input:
        per_subject=rules.evaluate.output.per_subject,
        per_sequence_set=rules.evaluate.output.per_sequence_set,
        predictions=lambda w: expand(rules.predict.output, experiment=w.experiment, subject=_test_subjects(w.experiment)),
        harmonized=lambda w: [
            LAYOUT.harmonized(experiment_pid(w.experiment), s) for s in _test_subjects(w.experiment)
        ],
    output:
        per_center_dice=_fig("per_center_dice", "per_center_dice"),
        per_center_dice_pdf=f"{FIGURES}/{{experiment}}/per_center_dice.pdf",
        per_center_detection=_fig("per_center_detection", "per_center_detection"),
        per_center_detection_pdf=f"{FIGURES}/{{experiment}}/per_center_detection.pdf",
        missing_sequences=_fig("missing_sequences", "missing_sequences"),
        missing_sequences_pdf=f"{FIGURES}/{{experiment}}/missing_sequences.pdf",
        size_vs_detection=_fig("size_vs_detection", "size_vs_detection"),
        size_vs_detection_pdf=f"{FIGURES}/{{experiment}}/size_vs_detection.pdf",
        presence_calibration=_fig("presence_calibration", "presence_calibration"),
        presence_calibration_pdf=f"{FIGURES}/{{experiment}}/presence_calibration.pdf",
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
        harmonized_root=lambda w: LAYOUT.harmonized(experiment_pid(w.experiment)),
        predictions_root=lambda w: LAYOUT.predictions(w.experiment),
        labels=EXPERIMENT_LABELS,
        n_boot=REPORT_N_BOOT,
    localrule: True
    log:
        f"{AGG_LOGS}/figures/{{experiment}}.log",
    script:
        "../scripts/figures.py"


rule figures_all:
    conda:
        "../envs/report.yaml"
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
        f"{AGG_LOGS}/figures/all_experiments.log",
    script:
        "../scripts/figures.py"


rule tables:
    conda:
        "../envs/report.yaml"
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
        f"{AGG_LOGS}/tables.log",
    script:
        "../scripts/tables.py"


# Reruns whenever the resolved config (params) or the sample sheet (input) changes.
rule provenance:
    conda:
        "../envs/report.yaml"
    input:
        sheet=SHEET,
    output:
        config=f"{LAYOUT.provenance}/config.yaml",
        provenance=report(
            f"{LAYOUT.provenance}/provenance.json",
            category="7. Provenance",
            caption="../report/provenance.rst",
        ),
        # the derivative folders belong to the full run: a selection leaves them alone
        descriptions=[] if SELECTION else [LAYOUT.dataset_description(d) for d in DERIVATIVES],
    params:
        cfg=config,
        derivatives=DERIVATIVES,
        repo=workflow.basedir,
    localrule: True
    log:
        f"{AGG_LOGS}/provenance.log",
    script:
        "../scripts/provenance.py"


ALL_TARGETS += rules.provenance.output
if REPORT_EXPERIMENTS:
    ALL_TARGETS += expand(
        [rules.figures.output.per_center_dice, rules.figures.output.overlays], experiment=REPORT_EXPERIMENTS
    )
    ALL_TARGETS += [rules.figures_all.output.ablation, rules.tables.output.per_center]
