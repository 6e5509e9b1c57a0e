# Curriculum training (GMD) of the thrombus model per experiment, and of the infarct model per
# protocol (used by lesion-guided post-processing). GPU rules request the standard `gpu` resource.
# Not defined when a single-center rerun reuses the existing models (see common.smk).
if not REUSE_MODELS:

    rule train_thrombus:
        conda:
            "../envs/torch.yaml"
        wildcard_constraints:
            experiment=one_of(THROMBSEG_EXPERIMENTS),  # nnU-Net experiments: rule nnunet_train
        input:
            harmonized=lambda w: _harmonized_for(experiment_pid(w.experiment)),
            splits=lambda w: LAYOUT.splits(experiment_pid(w.experiment)),
        output:
            model=LAYOUT.thrombus_model("{experiment}"),
            metrics=f"{LAYOUT.thrombus_dir('{experiment}')}/metrics.csv",
            curve=report(
                f"{LAYOUT.thrombus_dir('{experiment}')}/training_curve.png",
                category="3. Training",
                subcategory="{experiment}",
                caption="../report/training_curve.rst",
            ),
        params:
            cfg=lambda w: experiment_settings(TRAIN, w.experiment, "thrombus")[0],
            harmonized_root=lambda w: LAYOUT.harmonized(experiment_pid(w.experiment)),
        threads: TRAIN["threads"]
        resources:
            **train_resources(TRAIN),
        log:
            f"{LOGS}/train/{{experiment}}_thrombus.log",
        script:
            "../scripts/train.py"


    rule train_infarct:
        conda:
            "../envs/torch.yaml"
        input:
            harmonized=lambda w: _harmonized_for(w.pid),
            splits=LAYOUT.splits("{pid}"),
        output:
            model=LAYOUT.infarct_model("{pid}"),
            metrics=f"{LAYOUT.infarct_dir('{pid}')}/metrics.csv",
            curve=f"{LAYOUT.infarct_dir('{pid}')}/training_curve.png",
        params:
            cfg=lambda w: experiment_settings(TRAIN, EXPERIMENTS[0], "infarct")[0],
            harmonized_root=lambda w: LAYOUT.harmonized(w.pid),
        threads: TRAIN["threads"]
        resources:
            **train_resources(TRAIN),
        log:
            f"{LOGS}/train/infarct_{{pid}}.log",
        script:
            "../scripts/train.py"

    ALL_TARGETS += expand(rules.train_thrombus.output.model, experiment=THROMBSEG_EXPERIMENTS)
    ALL_TARGETS += expand(
        rules.train_infarct.output.model, pid=sorted({experiment_pid(e) for e in EXPERIMENTS})
    )
