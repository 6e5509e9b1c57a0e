"""Training: splits, the stack dataset, gradual modality dropout, the trainer and its CLI.

Importing the package loads nothing: ``training.splits`` (read by the Snakefile) stays torch-free.
"""
