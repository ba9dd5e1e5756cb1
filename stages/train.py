"""DVC stage `train`: train params.model on the preprocessed train set, selecting on validation loss.

Writes OUT_DIR/best.pth, OUT_DIR/last.pth and OUT_DIR/data_info.json, and per-epoch loss/accuracy through dvclive
to LIVE_DIR.
"""

from pathlib import Path

from slr.cli import run_main, stage_parser
from slr.params import load_params
from slr.train import train


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("clips_dir", type=Path, help="the preprocess stage's output (dvc.yaml: data/clips)")
    parser.add_argument("out_dir", type=Path, help="where checkpoints go (dvc.yaml: models)")
    parser.add_argument("live_dir", type=Path, help="dvclive folder for training curves (dvc.yaml: metrics/train)")
    args = parser.parse_args()
    params = load_params(args.params)
    p = params.train
    train(
        args.clips_dir,
        args.out_dir,
        args.live_dir,
        model_name=params.model,
        seed=params.seed,
        epochs=p.epochs,
        batch_size=p.batch_size,
        lr=p.lr,
        weight_decay=p.weight_decay,
        dropout=p.dropout,
        crop_size=p.crop_size,
        hflip=p.hflip,
    )


if __name__ == "__main__":
    run_main(main)
