# Preprocessing: skull stripping -> co-registration -> N4 -> QC per patient, then site
# harmonization whose Nyul landmarks are learned from training patients only.

rule preprocess:
    conda:
        "../envs/preprocessing.yaml"
    input:
        rules.ingest.output,
    output:
        directory(LAYOUT.preprocessed("{subject}")),
    params:
        cfg=config["preprocess"],
    threads: PRE_THREADS
    resources:
        mem_mb=4000,
        runtime=20,
    log:
        f"{LOGS}/preprocess/{{subject}}.log",
    script:
        "../scripts/preprocess.py"


rule splits:
    conda:
        "../envs/imaging.yaml"
    input:
        sheet=SHEET,
    output:
        LAYOUT.splits("{pid}"),
    params:
        table=lambda w: splits_of(w.pid),
    localrule: True
    log:
        f"{LOGS}/splits/{{pid}}.log",
    script:
        "../scripts/splits.py"


# Not defined when a single-center rerun reuses the landmarks (see common.smk).
if not REUSE_MODELS:

    rule fit_landmarks:
        conda:
            "../envs/preprocessing.yaml"
        input:
            preproc=lambda w: expand(rules.preprocess.output, subject=subjects_in(w.pid, "train")),
            splits=LAYOUT.splits("{pid}"),
        output:
            LAYOUT.landmarks("{pid}"),
        params:
            cfg=config["preprocess"],
            subjects=lambda w: subjects_in(w.pid, "train"),
            preproc_root=LAYOUT.preprocessed(),
        log:
            f"{LOGS}/harmonization/fit_landmarks_{{pid}}.log",
        script:
            "../scripts/fit_landmarks.py"


rule harmonize:
    conda:
        "../envs/preprocessing.yaml"
    input:
        preproc=rules.preprocess.output[0],
        landmarks=lambda w: frozen(LAYOUT.landmarks(w.pid)),
    output:
        directory(LAYOUT.harmonized("{pid}", "{subject}")),
    params:
        cfg=config["preprocess"],
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        f"{LOGS}/harmonize/{{pid}}/{{subject}}.log",
    script:
        "../scripts/harmonize.py"


rule qc_center:
    conda:
        "../envs/preprocessing.yaml"
    input:
        preproc=lambda w: expand(rules.preprocess.output, subject=_center_subjects(w)),
    output:
        tsv=report(
            LAYOUT.qc_table("{center}"),
            category="2. Preprocessing",
            subcategory="{center}",
            caption="../report/qc_tsv.rst",
        ),
        montages=report(
            directory(LAYOUT.qc_montages("{center}")),
            patterns=["{subject}_qc.png"],
            category="2. Preprocessing",
            subcategory="{center}",
            caption="../report/qc_montage.rst",
        ),
    params:
        subjects=_center_subjects,
        preproc_root=LAYOUT.preprocessed(),
    localrule: True
    log:
        f"{LOGS}/qc/{{center}}.log",
    script:
        "../scripts/qc_center.py"


ALL_TARGETS += [LAYOUT.harmonized(pid, s) for pid in PLAN.protocols for s in PLAN.harmonized_subjects(pid)]
if not REUSE_MODELS:
    ALL_TARGETS += expand(rules.qc_center.output.tsv, center=CENTERS)


# Opt-in, never part of `all`: `snakemake download_hdbet_weights --cores 1` on a machine with
# internet (e.g. a login node) fetches HD-BET's weights into preprocess.skullstrip.hdbet_weights
# (or HD-BET's default folder); compute nodes then run offline.
rule download_hdbet_weights:
    output:
        directory(HDBET_WEIGHTS_DIR),
    localrule: True
    conda:
        "../envs/preprocessing.yaml"
    log:
        f"{LOGS}/download_hdbet_weights.log",
    script:
        "../scripts/download_hdbet_weights.py"
