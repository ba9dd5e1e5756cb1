"""DVC stage `evaluate`: score the best checkpoint on val and test with ordered frames, and on test with shuffled
frames (one seeded permutation, with its Shannon entropy).

Writes the results (the original's CompRes) to METRICS and plot data for `dvc plots` to PLOTS_DIR.
"""

import argparse
from pathlib import Path

from slr.errors import run_main
from slr.evaluate import full_test
from slr.files import write_json
from slr.params import load_params
from slr.plots import write_plots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="the train stage's best checkpoint (dvc.yaml: models/best.pth)")
    parser.add_argument("clips_dir", type=Path, help="the preprocess stage's output (dvc.yaml: data/clips)")
    parser.add_argument("metrics", type=Path, help="results JSON (dvc.yaml: metrics/eval.json)")
    parser.add_argument("plots_dir", type=Path, help="plot data folder (dvc.yaml: plots/eval)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args()
    params = load_params(args.params)
    result, predictions = full_test(
        args.checkpoint, args.clips_dir, params.evaluate.batch_size, params.evaluate.shuffle_seed
    )
    write_json(args.metrics, result)
    write_plots(args.plots_dir, result, predictions)
    ordered, shuffled = (result[k]["top_k_per_instance_acc"]["top1"] for k in ("test", "test_shuff"))
    print(f"evaluate: test top-1 {ordered:.3f} ordered, {shuffled:.3f} shuffled; results in {args.metrics}")


if __name__ == "__main__":
    run_main(main)
