"""DVC stage `preprocess`: decode, trim, sample and resize the data.split subset into uint8 clip arrays.

Writes OUT_DIR/{train,val,test}.npy (uint8, N x T x H x W x C) and OUT_DIR/manifest.json, and the data report
(videos listed, present and readable per set) to REPORT as a DVC metric.
"""

from pathlib import Path

from slr.cli import run_main, stage_parser
from slr.data.metadata import load_index
from slr.data.preprocess import preprocess
from slr.files import write_json
from slr.params import load_params


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("raw_dir", type=Path, help="the download stage's output (dvc.yaml: data/raw)")
    parser.add_argument("out_dir", type=Path, help="where the clip arrays go (dvc.yaml: data/clips)")
    parser.add_argument("report", type=Path, help="data report JSON (dvc.yaml: metrics/data.json)")
    args = parser.parse_args()
    params = load_params(args.params)
    index = load_index(args.raw_dir / "WLASL_v0.3.json").subset(params.data.split)
    report = preprocess(
        index, args.raw_dir / "videos", args.out_dir, params.preprocess.num_frames, params.preprocess.frame_size
    )
    write_json(args.report, report)
    print(f"preprocess: {params.data.split} ({report['classes']} classes) -> {args.out_dir}; report {args.report}")


if __name__ == "__main__":
    run_main(main)
