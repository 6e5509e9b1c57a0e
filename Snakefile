# thrombseg: ingest -> skull stripping -> co-registration -> harmonization -> training ->
# inference -> per-center evaluation and figures. Rules live in workflow/rules/<stage>.smk
# (nnunet.smk: the nnU-Net v2 baseline's training and prediction, for `model: nnunet` experiments).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/preprocessing.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/inference.smk"
include: "workflow/rules/nnunet.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
