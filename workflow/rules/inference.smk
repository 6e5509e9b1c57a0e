# Inference on each experiment's test patients, with every subset of their sequences
# (missing-sequence tables without retraining) and lesion-guided post-processing whose settings
# were chosen on the experiment's validation patients (never on its test patients).

if not REUSE_MODELS:

    rule tune_postprocess:
        conda:
            "../../envs/torch.yaml"
        input:
            harmonized=lambda w: expand(
                f"{RESULTS}/harmonized/{{subject}}", subject=subjects_in(experiment_pid(w.experiment), "val")
            ),
            thrombus=thrombus_model("{experiment}"),
            infarct=lambda w: infarct_model(experiment_pid(w.experiment)),
        output:
            tuned_postprocess("{experiment}"),
        params:
            subjects=lambda w: {
                s: COHORT_CENTER[s] for s in subjects_in(experiment_pid(w.experiment), "val")
            },
            harmonized_root=f"{RESULTS}/harmonized",
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
        "../../envs/torch.yaml"
    input:
        harmonized=f"{RESULTS}/harmonized/{{subject}}",
        thrombus=lambda w: frozen(thrombus_model(w.experiment)),
        infarct=lambda w: frozen(infarct_model(experiment_pid(w.experiment))),
        tuned=lambda w: frozen(tuned_postprocess(w.experiment)) if tunes(w.experiment) else [],
    output:
        directory(f"{RESULTS}/predictions/{{experiment}}/{{subject}}"),
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
