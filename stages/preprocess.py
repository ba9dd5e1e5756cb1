"""DVC stage `preprocess`: decode, trim, sample and crop the data.split subset into uint8 clip shards.

Writes OUT_DIR/{train,val,test}-NNNNN.npy (uint8, n x T x H x W x C), OUT_DIR/manifest.json and OUT_DIR/quality.json
(the data report with video ids), the report's counts to REPORT, and its headline numbers (classes, clips per set,
videos skipped) to METRICS, a DVC metric. A killed run resumes.
"""

from pathlib import Path

from slr.cli import run_main, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("raw_dir", type=Path, help="the download stage's output (dvc.yaml: data/raw)")
    parser.add_argument("out_dir", type=Path, help="where the clip shards go (dvc.yaml: data/clips)")
    parser.add_argument("metrics", type=Path, help="data headline numbers, a DVC metric (dvc.yaml: metrics/data.json)")
    parser.add_argument("report", type=Path, help="data report counts, JSON (dvc.yaml: reports/data.json)")
    args = parser.parse_args()
    # OpenCV and torch (the person detector) are imported once the arguments are known: `--help` answers at once
    from slr.data.preprocess import prepare_clips
    from slr.data.quality import counts, headline
    from slr.files import write_json
    from slr.params import load_params

    params = load_params(args.params)
    p = params.preprocess
    quality = prepare_clips(
        args.raw_dir, args.out_dir, params.data.split, num_frames=p.num_frames, frame_size=p.frame_size,
        crop=p.crop, bbox_margin=p.bbox_margin, drop_cross_split_duplicates=p.drop_cross_split_duplicates,
        max_missing=p.max_missing,
    )
    write_json(args.metrics, headline(quality))
    write_json(args.report, counts(quality))
    print(f"preprocess: {params.data.split} ({quality['classes']} classes) -> {args.out_dir}; "
          f"report {args.report}, ids in {args.out_dir / 'quality.json'}")


if __name__ == "__main__":
    run_main(main)
