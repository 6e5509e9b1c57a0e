# Ingest: the whole sheet is validated (every problem at once), then each patient is converted
# to canonical RAS float32 NIfTIs with a JSON sidecar.


# The whole sheet, whatever the `centers` filter (checked at parse time): a one-center rerun must not
# rewrite this file, which every patient's ingest depends on.
rule validate_sheet:
    conda:
        "../envs/imaging.yaml"
    input:
        sheet=SHEET,
    output:
        LAYOUT.sheet_validation(),
    log:
        f"{LOGS}/ingest/validate_sheet.log",
    script:
        "../scripts/validate_sheet.py"


rule ingest:
    conda:
        "../envs/imaging.yaml"
    input:
        sheet=SHEET,
        validated=rules.validate_sheet.output,
    output:
        directory(LAYOUT.ingested("{subject}")),
    log:
        f"{LOGS}/ingest/{{subject}}.log",
    script:
        "../scripts/ingest.py"


ALL_TARGETS += expand(rules.ingest.output, subject=PREPROCESS_SUBJECTS)
