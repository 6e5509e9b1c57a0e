"""Rule audit: the leakage table of every experiment; fails when a test patient fitted an artefact."""
import logging

from thrombseg.audit import LeakageError, audit_experiment, write_audit
from thrombseg.smk import run_step


def step(sm):
    tables = [audit_experiment(e, sm.params.splits[e], sm.params.artefacts[e]) for e in sm.params.artefacts]
    for table in tables:  # the evidence stays in the log even when the job fails
        logging.getLogger("thrombseg.audit").info("\n%s", table.to_string(index=False))
    write_audit(tables, sm.output[0])


run_step(snakemake, step, errors=(LeakageError,))  # noqa: F821
