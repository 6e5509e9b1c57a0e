# Inference on each experiment's test patients, with every subset of their sequences
# (missing-sequence tables without retraining) and lesion-guided post-processing.


rule predict:
    conda:
        "../../envs/torch.yaml"
    input:
        harmonized=f"{RESULTS}/harmonized/{{subject}}",
        thrombus=lambda w: frozen(thrombus_model(w.experiment)),
        infarct=lambda w: frozen(infarct_model(experiment_pid(w.experiment))),
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
