# Evaluation: per-subject metric rows (one per sequence subset) -> per-center, per-sequence-set
# and per-experiment tables with bootstrap intervals.


rule evaluate:
    conda:
        "../envs/torch.yaml"
    input:
        lambda w: expand(rules.predict.output, experiment=w.experiment, subject=_test_subjects(w.experiment)),
    output:
        per_subject=f"{LAYOUT.metrics('{experiment}')}/per_subject.tsv",
        per_center=report(
            f"{LAYOUT.metrics('{experiment}')}/per_center.tsv",
            category="4. Evaluation",
            subcategory="{experiment}",
            caption="../report/per_center.rst",
        ),
        per_sequence_set=f"{LAYOUT.metrics('{experiment}')}/per_sequence_set.tsv",
        per_experiment=f"{LAYOUT.metrics('{experiment}')}/per_experiment.tsv",
    params:
        subjects=lambda w: _test_subjects(w.experiment),
        n_boot=REPORT_N_BOOT,
    localrule: True
    log:
        f"{AGG_LOGS}/evaluate/{{experiment}}.log",
    script:
        "../scripts/evaluate.py"


ALL_TARGETS += expand(rules.evaluate.output.per_center, experiment=REPORT_EXPERIMENTS)
