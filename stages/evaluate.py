"""DVC stage `evaluate`: the full test of the best checkpoint, and the frame-order study.

Runs on the device training used (evaluate.device: auto) in training's precision, reading each test clip once for
every frame ordering. METRICS gets the numbers a comparison of runs needs (ordered, shuffled and reversed top-1/5,
95% bootstrap intervals, the sweep's summary, device, precision and the WLASL copy); REPORT the original project's
result shapes (CompRes) and the order study in full; PLOTS_DIR the plot data and images, per-gloss order
sensitivity included; PREDICTIONS each test clip's outcome (slr.predictions), for comparing runs clip by clip.
"""

from pathlib import Path

from slr.cli import run_main, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("checkpoint", type=Path, help="the train stage's best checkpoint (dvc.yaml: models/best.pth)")
    parser.add_argument("clips_dir", type=Path, help="the preprocess stage's output (dvc.yaml: data/clips)")
    parser.add_argument("metrics", type=Path, help="the evaluation's DVC metrics (dvc.yaml: metrics/eval.json)")
    parser.add_argument("report", type=Path, help="full results, JSON (dvc.yaml: reports/eval.json)")
    parser.add_argument("plots_dir", type=Path, help="plot data folder (dvc.yaml: plots/eval)")
    parser.add_argument("predictions", type=Path, help="per-clip outcome, JSON (dvc.yaml: reports/predictions.json)")
    args = parser.parse_args()
    # torch and the models are imported once the arguments are known: `--help` answers at once
    from slr.evaluate import evaluate_checkpoint, per_clip
    from slr.files import write_json
    from slr.params import load_params
    from slr.plots import Caption, write_plots
    from slr.predictions import write_predictions

    report = evaluate_checkpoint(args.checkpoint, args.clips_dir, load_params(args.params).evaluate)
    write_json(args.metrics, report.metrics)
    write_json(args.report, {**report.compres, "order_study": report.study, "provenance": report.evaluation.provenance})
    write_plots(args.plots_dir, report.compres, report.study, report.by_gloss, report.evaluation.test,
                report.evaluation.glosses, Caption.of(report.meta, "test", "ordered frames"))
    write_predictions(args.predictions, per_clip(report.evaluation, args.clips_dir))
    m = report.metrics
    print(f"evaluate: test top-1 {m['ordered']['top1']:.3f} ordered, {m['reversed']['top1']:.3f} reversed, "
          f"{m['shuffled']['top1']:.3f} shuffled (drop {m['drop']['top1']:.3f}, 95% {m['drop']['top1_low']:.3f}"
          f"..{m['drop']['top1_high']:.3f}); results in {args.metrics}, {args.report}, {args.plots_dir}, "
          f"{args.predictions}")


if __name__ == "__main__":
    run_main(main)
