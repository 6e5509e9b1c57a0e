# Leakage audit: for every experiment, which patients influenced each artefact its predictions use
# (landmarks, weights, checkpoint choice, post-processing tuning), read from the artefacts' own
# records; the run fails if one of the experiment's test patients is among them.


rule audit:
    conda:
        "../envs/imaging.yaml"
    input:
        splits=[LAYOUT.splits(pid) for pid in PLAN.protocols],
        artefacts=[frozen(path) for e in EXPERIMENTS for _, path in PLAN.audit_artefacts(e).values()],
    output:
        report(
            LAYOUT.audit_table(),
            category="7. Provenance",
            caption="../report/audit.rst",
        ),
    params:
        splits={e: LAYOUT.splits(experiment_pid(e)) for e in EXPERIMENTS},
        artefacts={e: PLAN.audit_artefacts(e) for e in EXPERIMENTS},
    localrule: True
    log:
        f"{AGG_LOGS}/audit.log",
    script:
        "../scripts/audit.py"


ALL_TARGETS += rules.audit.output
