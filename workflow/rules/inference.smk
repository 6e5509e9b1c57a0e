# Inference on each experiment's test patients, with every subset of their sequences
# (missing-sequence tables without retraining) and lesion-guided post-processing whose settings
# were chosen on the experiment's validation patients (never on its test patients).

if not REUSE_MODELS:

    rule tune_postprocess:
        conda:
            "../envs/torch.yaml"
        wildcard_constraints:
            experiment=one_of(THROMBSEG_EXPERIMENTS),  # nnU-Net experiments: rule nnunet_tune_postprocess
        input:
            harmonized=lambda w: [
                LAYOUT.harmonized(experiment_pid(w.experiment), s)
                for s in subjects_in(experiment_pid(w.experiment), "val")
            ],
            thrombus=LAYOUT.thrombus_model("{experiment}"),
            infarct=lambda w: LAYOUT.infarct_model(experiment_pid(w.experiment)),
        output:
            LAYOUT.tuned_postprocess("{experiment}"),
        params:
            subjects=lambda w: _plan(PLAN.val_centers, w.experiment),
            harmonized_root=lambda w: LAYOUT.harmonized(experiment_pid(w.experiment)),
            cfg=config["inference"],
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30,
        log:
            f"{LOGS}/tune_postprocess/{{experiment}}.log",
        script:
            "../scripts/tune_postprocess.py"



rule predict:
    conda:
        "../envs/torch.yaml"
    wildcard_constraints:
        experiment=one_of(THROMBSEG_EXPERIMENTS),  # nnU-Net experiments: rule nnunet_predict
    input:
        harmonized=lambda w: LAYOUT.harmonized(experiment_pid(w.experiment), w.subject),
        thrombus=lambda w: frozen(LAYOUT.thrombus_model(w.experiment)),
        infarct=lambda w: frozen(LAYOUT.infarct_model(experiment_pid(w.experiment))),
        tuned=lambda w: frozen(LAYOUT.tuned_postprocess(w.experiment)) if tunes(w.experiment) else [],
    output:
        directory(LAYOUT.predictions("{experiment}", "{subject}")),
    params:
        center=lambda w: CENTER_OF[w.subject],
        cfg=config["inference"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        f"{LOGS}/predict/{{experiment}}/{{subject}}.log",
    script:
        "../scripts/predict.py"


ALL_TARGETS += [
    p for e in EXPERIMENTS for p in expand(rules.predict.output, experiment=e, subject=_test_subjects(e))
]
