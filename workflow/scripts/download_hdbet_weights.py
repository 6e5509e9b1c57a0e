"""Rule download_hdbet_weights: the only step that uses the network, and only when asked."""
from thrombseg.preprocessing import PreprocessingError
from thrombseg.preprocessing.skullstrip import download_hdbet_weights
from thrombseg.smk import run_step


def step(sm):
    download_hdbet_weights(sm.output[0])


run_step(snakemake, step, errors=(PreprocessingError,))  # noqa: F821
