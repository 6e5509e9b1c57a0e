"""Rule nnunet_export: the protocol's training patients as the experiment's nnU-Net raw dataset."""
from thrombseg.baselines.nnunet.workflow import export_experiment
from thrombseg.smk import run_step


def step(sm):
    export_experiment(sm.params.harmonized_root, [tuple(p) for p in sm.params.patients], sm.params.results,
                      sm.params.dataset_id, sm.params.experiment)


run_step(snakemake, step)  # noqa: F821
