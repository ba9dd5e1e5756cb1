"""DVC stage `evaluate`: the full test of the best checkpoint, and the frame-order study.

Full test (the original's CompRes, to METRICS): val and test with ordered frames, test with one seeded frame
permutation and its Shannon entropy. Order study (to ORDER_METRICS): test with frames reversed and under
evaluate.sweep_count permutations from barely to fully shuffled, summarised per entropy band. Plot data and
images go to PLOTS_DIR.
"""

from pathlib import Path

from slr.cli import run_main, stage_parser
from slr.evaluate import full_test, load_model, order_study
from slr.files import write_json
from slr.params import load_params
from slr.plots import write_plots


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("checkpoint", type=Path, help="the train stage's best checkpoint (dvc.yaml: models/best.pth)")
    parser.add_argument("clips_dir", type=Path, help="the preprocess stage's output (dvc.yaml: data/clips)")
    parser.add_argument("metrics", type=Path, help="full-test results JSON (dvc.yaml: metrics/eval.json)")
    parser.add_argument("order_metrics", type=Path, help="order-study summary JSON (dvc.yaml: metrics/order.json)")
    parser.add_argument("plots_dir", type=Path, help="plot data folder (dvc.yaml: plots/eval)")
    args = parser.parse_args()
    p = load_params(args.params).evaluate
    model, meta = load_model(args.checkpoint)
    result, predictions = full_test(model, meta, args.clips_dir, p.batch_size, p.shuffle_seed)
    study = order_study(model, meta, args.clips_dir, p.batch_size, p.sweep_count, p.sweep_seed)
    write_json(args.metrics, result)
    ordered = {f"top{k}": result["test"]["top_k_per_instance_acc"][f"top{k}"] for k in (1, 5)}
    write_json(args.order_metrics, {"ordered": ordered, **{k: v for k, v in study.items() if k != "sweep"}})
    write_plots(args.plots_dir, result, study, predictions)
    top1 = {k: result[k]["top_k_per_instance_acc"]["top1"] for k in ("test", "test_shuff")}
    print(
        f"evaluate: test top-1 {top1['test']:.3f} ordered, {study['reversed']['top1']:.3f} reversed, "
        f"{top1['test_shuff']:.3f} shuffled; results in {args.metrics}, {args.order_metrics}, {args.plots_dir}"
    )


if __name__ == "__main__":
    run_main(main)
