"""Rule nnunet_plan: nnU-Net's planner and preprocessing of one exported dataset (its own command)."""
from thrombseg.baselines.nnunet.commands import plan_and_preprocess
from thrombseg.smk import run_step


def step(sm):
    plan_and_preprocess(sm.params.dataset_id, sm.params.results, sm.params.configuration, processes=sm.threads,
                        log=sm.log.nnunet)


run_step(snakemake, step)  # noqa: F821
