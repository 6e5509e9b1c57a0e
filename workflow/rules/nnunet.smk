# nnU-Net v2 as a baseline (thrombseg.baselines.nnunet), for experiments with `model: nnunet`:
# export the protocol's training patients as an nnU-Net raw dataset (one per experiment, under
# results/nnunet/raw/DatasetXXX_<experiment>), nnU-Net's planner and preprocessing, training on fold
# `all` with the budget trainer (or the GMD trainer when the experiment gives a dropout schedule).
# Prediction and post-processing tuning then run thrombseg's own code on nnU-Net's probabilities, with
# the protocol's infarct model, into the same files as rules predict and tune_postprocess, so that
# evaluate, figures, tables and the audit treat the experiment like any other.


if not REUSE_MODELS:

    rule nnunet_export:
        conda:
            "../envs/torch.yaml"
        wildcard_constraints:
            dataset=one_of(NNUNET_EXPERIMENT_OF),
        input:
            harmonized=lambda w: [LAYOUT.harmonized(nnunet_pid(w), s) for s in subjects_in(nnunet_pid(w), "train")],
            splits=lambda w: LAYOUT.splits(nnunet_pid(w)),
        output:
            LAYOUT.nnunet_raw_json("{dataset}"),
        params:
            experiment=lambda w: NNUNET_EXPERIMENT_OF[w.dataset],
            dataset_id=lambda w: nnunet_settings_of(w)["dataset_id"],
            # nnU-Net trains on the training patients only (fold `all`); validation patients tune the
            # post-processing, test patients are never exported
            patients=lambda w: [(s, COHORT_CENTER[s]) for s in subjects_in(nnunet_pid(w), "train")],
            harmonized_root=lambda w: LAYOUT.harmonized(nnunet_pid(w)),
            results=lambda w: LAYOUT.root,  # nnU-Net's folders: <results>/nnunet/{raw,preprocessed,trained}
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        log:
            f"{LOGS}/nnunet/{{dataset}}_export.log",
        script:
            "../scripts/nnunet_export.py"


    rule nnunet_plan:
        conda:
            "../envs/torch.yaml"
        wildcard_constraints:
            dataset=one_of(NNUNET_EXPERIMENT_OF),
        input:
            LAYOUT.nnunet_raw_json("{dataset}"),
        output:
            directory(LAYOUT.nnunet_preprocessed("{dataset}")),
        params:
            dataset_id=lambda w: nnunet_settings_of(w)["dataset_id"],
            configuration=lambda w: nnunet_settings_of(w)["configuration"],
            results=lambda w: LAYOUT.root,  # nnU-Net's folders: <results>/nnunet/{raw,preprocessed,trained}
        threads: 2
        resources:
            mem_mb=8000,
            runtime=120,
        log:
            step=f"{LOGS}/nnunet/{{dataset}}_plan.log",
            nnunet=f"{LOGS}/nnunet/{{dataset}}_plan_nnunet.log",
        script:
            "../scripts/nnunet_plan.py"


    rule nnunet_train:
        conda:
            "../envs/torch.yaml"
        wildcard_constraints:
            dataset=one_of(NNUNET_EXPERIMENT_OF),
            trainer="nnUNetTrainer[A-Za-z0-9]*",
            configuration="2d|3d_fullres",
        input:
            LAYOUT.nnunet_preprocessed("{dataset}"),
        output:
            checkpoint=LAYOUT.nnunet_checkpoint("{dataset}", "{trainer}", "{configuration}"),
        params:
            settings=nnunet_settings_of,
            train_subjects=lambda w: subjects_in(nnunet_pid(w), "train"),
            results=lambda w: LAYOUT.root,  # nnU-Net's folders: <results>/nnunet/{raw,preprocessed,trained}
        threads: TRAIN["threads"]
        resources:
            **train_resources(TRAIN),
        log:
            step=f"{LOGS}/train/{{dataset}}_{{trainer}}_{{configuration}}.log",
            nnunet=f"{LOGS}/train/{{dataset}}_{{trainer}}_{{configuration}}_nnunet.log",
        script:
            "../scripts/nnunet_train.py"


    rule nnunet_tune_postprocess:
        conda:
            "../envs/torch.yaml"
        wildcard_constraints:
            experiment=one_of(NNUNET_EXPERIMENTS),
        input:
            harmonized=lambda w: [
                LAYOUT.harmonized(experiment_pid(w.experiment), s)
                for s in subjects_in(experiment_pid(w.experiment), "val")
            ],
            thrombus=lambda w: thrombus_model(w.experiment),
            infarct=lambda w: LAYOUT.infarct_model(experiment_pid(w.experiment)),
        output:
            LAYOUT.tuned_postprocess("{experiment}"),
        params:
            subjects=lambda w: _plan(PLAN.val_centers, w.experiment),
            harmonized_root=lambda w: LAYOUT.harmonized(experiment_pid(w.experiment)),
            cfg=config["inference"],
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30,
        log:
            f"{LOGS}/tune_postprocess/{{experiment}}.log",
        script:
            "../scripts/nnunet_tune_postprocess.py"

    ALL_TARGETS += [thrombus_model(e) for e in NNUNET_EXPERIMENTS]


rule nnunet_predict:
    conda:
        "../envs/torch.yaml"
    wildcard_constraints:
        experiment=one_of(NNUNET_EXPERIMENTS),
    input:
        harmonized=lambda w: LAYOUT.harmonized(experiment_pid(w.experiment), w.subject),
        thrombus=lambda w: frozen(thrombus_model(w.experiment)),
        infarct=lambda w: frozen(LAYOUT.infarct_model(experiment_pid(w.experiment))),
        tuned=lambda w: frozen(LAYOUT.tuned_postprocess(w.experiment)) if tunes(w.experiment) else [],
    output:
        directory(LAYOUT.predictions("{experiment}", "{subject}")),
    params:
        center=lambda w: CENTER_OF[w.subject],
        cfg=config["inference"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        f"{LOGS}/predict/{{experiment}}/{{subject}}.log",
    script:
        "../scripts/nnunet_predict.py"
