"""DVC stage `train`: train params.model on the preprocessed train set, selecting on validation loss.

Writes OUT_DIR/best.pth (lowest val loss), OUT_DIR/last.pth (the full state of the run, from which a killed run
resumes) and OUT_DIR/data_info.json, and per-epoch loss/accuracy through dvclive to LIVE_DIR. With
train.nproc_per_node > 1 it relaunches itself under torchrun (DDP); started by torchrun, it joins that process group.
It first takes GPUs no other run on the machine holds, waiting for them if need be, or a share of the CPU cores
(slr.devices), so that `dvc queue start -j N` can run N experiments at once.
"""

import sys
from pathlib import Path

from slr.cli import run_main, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("clips_dir", type=Path, help="the preprocess stage's output (dvc.yaml: data/clips)")
    parser.add_argument("out_dir", type=Path, help="where checkpoints go (dvc.yaml: models)")
    parser.add_argument("live_dir", type=Path, help="dvclive folder for training curves (dvc.yaml: metrics/train)")
    args = parser.parse_args()
    # torch and the models are imported once the arguments are known: `--help` answers at once
    from slr import distributed
    from slr.devices import claimed
    from slr.params import load_params
    from slr.train import train

    params = load_params(args.params)
    processes = params.train.nproc_per_node
    # a GPU per process that no other run on this machine holds (or a share of the cores), before CUDA starts
    with claimed("auto", processes, setting="train.nproc_per_node"):
        if processes > 1 and not distributed.under_torchrun():
            sys.exit(distributed.relaunch(processes, sys.argv))
        train(args.clips_dir, args.out_dir, args.live_dir, model_name=params.model, seed=params.seed, p=params.train)


if __name__ == "__main__":
    run_main(main)
