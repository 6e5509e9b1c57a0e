# The embedded default cohort: generated from nilearn's MNI152 when `cohort: synthetic`.


rule synth:
    conda:
        "../envs/imaging.yaml"
    output:
        sheet=LAYOUT.synthetic_sheet,
        montages=report(
            [LAYOUT.synthetic_montage(c) for c in sorted(set(COHORT_CENTER.values()))],
            category="1. Synthetic cohort",
            caption="../report/synth_montage.rst",
        ),
    params:
        n_per_center=config["synthetic"]["n_per_center"],
        seed=config["synthetic"]["seed"],
        size=config["synthetic"]["size"],
        negative_share=config["synthetic"]["negative_share"],
    threads: 2
    log:
        f"{LOGS}/synth.log",
    script:
        "../scripts/synth.py"


if config["cohort"] == "synthetic":
    ALL_TARGETS += rules.synth.output.montages
