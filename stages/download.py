"""DVC stage `download`: put the raw dataset (WLASL_v0.3.json + videos/<video_id>.mp4) in OUT_DIR.

With data.source=synthetic (the default) it generates the embedded synthetic WLASL, deterministically from
data.synthetic.seed, so the pipeline runs with no network and no data brought in.
"""

from pathlib import Path

from slr.cli import run_main, stage_parser
from slr.data.synthetic import generate
from slr.files import atomic_dir
from slr.params import load_params


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("out_dir", type=Path, help="where the raw dataset goes (dvc.yaml: data/raw)")
    args = parser.parse_args()
    params = load_params(args.params)
    with atomic_dir(args.out_dir) as tmp:
        generate(params.data.synthetic, tmp)
    print(f"download: synthetic WLASL written to {args.out_dir}")


if __name__ == "__main__":
    run_main(main)
