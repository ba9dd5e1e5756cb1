"""DVC stage `train`: train params.model on the preprocessed train set, selecting on validation loss.

Writes OUT_DIR/best.pth (lowest val loss), OUT_DIR/last.pth (the full state of the run, from which a killed run
resumes) and OUT_DIR/data_info.json, and per-epoch loss/accuracy through dvclive to LIVE_DIR. With
train.nproc_per_node > 1 it relaunches itself under torchrun (DDP); started by torchrun, it joins that process group.
It first decides the device (train.device: a GPU this torch cannot use stops it in one line) and takes GPUs or CPU
cores that no other run on the machine holds, waiting for them if need be (slr.devices), so that `dvc queue start
-j N` can run N experiments at once, each with the results it would have alone.
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
    p = params.train
    # a GPU per process that no other run on this machine holds (or train.threads cores each), before CUDA starts
    with claimed(p.device, p.nproc_per_node, threads=p.threads, amp=p.amp, setting="train.device") as device:
        if p.nproc_per_node > 1 and not distributed.under_torchrun():
            sys.exit(distributed.relaunch(p.nproc_per_node, sys.argv, p.threads))
        train(args.clips_dir, args.out_dir, args.live_dir, model_name=params.model, seed=params.seed, p=p,
              device_type=device.type)


if __name__ == "__main__":
    run_main(main)
