"""``python -m thrombseg.baselines.nnunet.train``: nnU-Net's ``nnUNetv2_train`` for thrombseg's trainers.

The same arguments as nnU-Net's command (the subset the workflow uses) and nnU-Net's own
``run_training`` (plans, checkpoints, ``--c`` resume, final validation); only the trainer name is
resolved by ``lookup.findable_trainers`` first, which nnU-Net's command cannot do here (see there).
"""

from __future__ import annotations

import argparse

DEVICES = ("cpu", "cuda")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thrombseg.baselines.nnunet.train", description=__doc__)
    parser.add_argument("dataset_name_or_id")
    parser.add_argument("configuration")
    parser.add_argument("fold")
    parser.add_argument("-tr", default="nnUNetTrainerBudget", help="trainer class name")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    parser.add_argument("-device", default="cpu", choices=DEVICES)
    parser.add_argument("--c", action="store_true", help="continue from the last checkpoint (a new run when none)")
    args = parser.parse_args(argv)

    import torch
    from nnunetv2.run.run_training import run_training

    from .lookup import findable_trainers

    with findable_trainers():
        run_training(args.dataset_name_or_id, args.configuration, args.fold, args.tr, args.p,
                     continue_training=args.c, device=torch.device(args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
