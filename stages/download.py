"""DVC stage `download`: put the raw dataset (WLASL_v0.3.json + videos/<video_id>.mp4) in OUT_DIR.

data.source picks where it comes from: `synthetic` (the default) generates the embedded synthetic WLASL with no
network; `release` downloads the original project's archives (resumable, sha256-checked) into --downloads;
`local` links a WLASL copy from data.local.path. REPORT gets what was used and how many videos it holds.
"""

from pathlib import Path

from slr.cli import run_main, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("out_dir", type=Path, help="where the raw dataset goes (dvc.yaml: data/raw)")
    parser.add_argument("report", type=Path, help="download report, JSON (dvc.yaml: reports/download.json)")
    parser.add_argument("--downloads", type=Path, default=Path("data/downloads"), help="archives kept between runs")
    parser.add_argument("--data-dvc", type=Path, help="the .dvc file that versions a local copy (dvc.yaml: data.dvc)")
    args = parser.parse_args()
    # OpenCV and the sources are imported once the arguments are known: `--help` answers at once
    from slr.data.sources import materialise
    from slr.files import write_json
    from slr.params import load_params

    data = load_params(args.params).data
    report = materialise(data.source, data.synthetic, data.release, data.local, args.out_dir, args.downloads,
                         args.data_dvc)
    write_json(args.report, report)
    print(f"download: {data.source} WLASL written to {args.out_dir} ({report['videos']} videos), report {args.report}")


if __name__ == "__main__":
    run_main(main)
