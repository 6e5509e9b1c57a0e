"""Rules figures (one experiment) and figures_all (across experiments): thrombseg.report.figures."""
from pathlib import Path

from thrombseg.report.figures import make_comparison_figures, make_experiment_figures, plot_presence_calibration
from thrombseg.smk import run_step

COMPARISON_FIGURES = ("ablation", "missing_sequences", "per_center_dice", "per_center_detection")


def step(sm):
    labels = dict(sm.params.labels)
    if sm.rule == "figures_all":
        out = {name: getattr(sm.output, name) for name in COMPARISON_FIGURES}
        make_comparison_figures(list(sm.input.per_subject), list(sm.input.per_sequence_set), out,
                                labels=labels, n_boot=sm.params.n_boot)
        return
    make_experiment_figures(sm.input.per_subject, sm.input.per_sequence_set, sm.params.harmonized_root,
                            sm.params.predictions_root, Path(sm.output.per_center_dice).parent,
                            experiment=sm.params.experiment, labels=labels, n_boot=sm.params.n_boot,
                            centers=sm.params.centers)
    # a note figure when the predictions give no presence probability (the rule's output exists either way)
    plot_presence_calibration(sm.input.per_subject, sm.output.presence_calibration, labels)


run_step(snakemake, step)  # noqa: F821
