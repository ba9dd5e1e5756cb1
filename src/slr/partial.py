"""`slr-test`: one ad-hoc test of any checkpoint, outside the pipeline (the original project's `partial` mode).

Any set (train/val/test), frames ordered, shuffled by a seeded permutation or reversed, optional multi-view testing,
optional graphs; the clip length and size can be overridden by preprocessing that set again from the raw videos.
It scores clips with the evaluate stage's own functions on the same device, so its numbers are the pipeline's.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import fields, replace
from pathlib import Path

from typing import TYPE_CHECKING

from slr.cli import run_main, stage_parser
from slr.errors import UserError

if TYPE_CHECKING:
    from slr.metrics import Scored

GRAPHS = ("confusion", "bars")


def partial_test(
    checkpoint: Path,
    clips_dir: Path,
    set_name: str,
    batch_size: int,
    device_name: str = "auto",
    threads: int | None = None,
    shuffle_seed: int | None = None,
    reverse: bool = False,
    temporal_views: int = 1,
    spatial_views: int = 1,
) -> tuple[dict, Scored, list[str], dict]:
    """Test `checkpoint` on one set; return the result (BaseRes, or ShuffRes when shuffled, with the protocol and
    provenance), the scored clips, the glosses and the checkpoint's metadata."""
    import torch

    from slr.batches import eval_loader
    from slr.data.dataset import ClipDataset, load_manifest
    from slr.distributed import Process
    from slr.devices import claimed, configure, environment
    from slr.evaluate import feed_for, load_model, read_checkpoint, threads_of
    from slr.inference import Views, predict
    from slr.metrics import base_result
    from slr.models import check_input
    from slr.shuffle import make_permutation, shannon_entropy

    if shuffle_seed is not None and reverse:
        raise UserError("choose --shuffle or --reverse, not both")
    meta = read_checkpoint(checkpoint)
    # Training's thread count, as the evaluate stage uses: then the numbers are the pipeline's.
    threads = threads_of(meta) if threads is None else threads
    with claimed(device_name, threads=threads, setting="--device", cpu_fix="--device cpu") as device:
        configure(device)
        model = load_model(meta, device)
        manifest = load_manifest(clips_dir)
        if len(manifest["glosses"]) != meta["num_classes"]:
            raise UserError(f"{clips_dir} has {len(manifest['glosses'])} classes, the checkpoint "
                            f"{meta['num_classes']}: another split")
        multi = temporal_views > 1 or spatial_views > 1
        views = Views(temporal_views, spatial_views, meta["num_frames"], meta["crop_size"]) if multi else None
        crop = None if multi else meta["crop_size"]
        dataset = ClipDataset(clips_dir, set_name, crop, train=False, flip=False, seed=0)
        length = dataset.clips.shape[1]
        # One temporal view sees the whole clip (any frame count the model takes); several see windows of the
        # trained length.
        check_input(meta["model"], length if temporal_views == 1 else meta["num_frames"], meta["crop_size"])
        perm = make_permutation(length, shuffle_seed) if shuffle_seed is not None else None
        perm = list(range(length - 1, -1, -1)) if reverse else perm
        feed = feed_for(meta, device)
        batches = eval_loader(dataset, batch_size, Process(0, 1, device))
        try:
            scored = predict(model, batches, feed, device, [perm], views, desc=set_name)[0]
        except torch.OutOfMemoryError:
            raise UserError(f"out of GPU memory at --batch-size {batch_size}: lower it (--batch-size "
                            f"{max(1, batch_size // 2)})") from None
    result = {**base_result(scored), "num_videos": len(scored.labels), "num_missing": dataset.missing}
    if perm is not None:
        result |= {"perm": perm, "shannon_entropy": shannon_entropy(perm)}
    result["protocol"] = {"num_frames": length, "frame_size": dataset.clips.shape[2], "crop_size": meta["crop_size"],
                          "temporal_views": temporal_views, "spatial_views": spatial_views}
    result["provenance"] = {"checkpoint": str(checkpoint), "model": meta["model"], **environment(device, threads),
                            "precision": feed.precision, "copy": (manifest.get("copy") or {}).get("md5")}
    return result, scored, manifest["glosses"], meta


def reprocess_set(
    clips_dir: Path, raw_dir: Path, set_name: str, out_dir: Path, num_frames: int | None, frame_size: int | None
) -> None:
    """Preprocess the videos of one set of `clips_dir` again from `raw_dir`, as that set was made but for the clip
    length and size (the same videos, crop and trimming)."""
    from slr.data.dataset import load_manifest
    from slr.data.metadata import load_index
    from slr.data.clip import ClipSpec
    from slr.data.preprocess import preprocess

    manifest = load_manifest(clips_dir)
    listed = {*manifest["sets"][set_name]["video_ids"], *manifest["sets"][set_name]["skipped"]}
    index = load_index(raw_dir / "WLASL_v0.3.json").first(len(manifest["glosses"]))
    index = index.without({i.video_id for i in index.instances} - listed)
    spec = ClipSpec(**{f.name: manifest[f.name] for f in fields(ClipSpec)})
    spec = replace(spec, num_frames=num_frames or spec.num_frames, frame_size=frame_size or spec.frame_size)
    preprocess(index, raw_dir / "videos", out_dir, spec, sets=(set_name,), copy=manifest.get("copy"))


def rounded(value: object, digits: int = 4) -> object:
    """`value` with every float rounded for printing (the saved result keeps full precision)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def main() -> None:
    parser = stage_parser(__doc__, params=False)
    parser.add_argument("--checkpoint", type=Path, default=Path("models/best.pth"), help="default: %(default)s")
    parser.add_argument("--clips", type=Path, default=Path("data/clips"), help="clips folder (default: %(default)s)")
    parser.add_argument("--set", default="test", choices=("train", "val", "test"), help="default: %(default)s")
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--shuffle", type=int, metavar="SEED", help="shuffle frames with the permutation of SEED")
    order.add_argument("--reverse", action="store_true", help="play every clip backwards")
    parser.add_argument("--num-frames", type=int, help="re-preprocess the set from --raw with this many frames")
    parser.add_argument("--frame-size", type=int, help="re-preprocess the set from --raw at this stored size")
    parser.add_argument("--raw", type=Path, default=Path("data/raw"), help="raw data for overrides (%(default)s)")
    parser.add_argument("--temporal-views", type=int, default=1, help="windows per clip (more frames than trained)")
    parser.add_argument("--spatial-views", type=int, default=1, choices=(1, 3), help="1 centre crop or 3 crops")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: the GPU when there is one, as training (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch threads on CPU (default: the checkpoint's training threads, "
                        "as the evaluate stage)")
    parser.add_argument("--graphs", nargs="+", choices=GRAPHS, default=[], help="graphs to save (needs --save)")
    parser.add_argument("--save", type=Path, metavar="DIR", help="write result.json and the chosen graphs here")
    args = parser.parse_args()
    if args.graphs and not args.save:
        raise UserError("--graphs writes PNG files: add --save DIR")
    with tempfile.TemporaryDirectory(prefix="slr-test-") as tmp:
        clips_dir = args.clips
        if args.num_frames or args.frame_size:
            clips_dir = Path(tmp) / "clips"
            reprocess_set(args.clips, args.raw, args.set, clips_dir, args.num_frames, args.frame_size)
        result, scored, glosses, meta = partial_test(
            args.checkpoint, clips_dir, args.set, args.batch_size, args.device, args.threads, args.shuffle, args.reverse,
            args.temporal_views, args.spatial_views,
        )
    print(json.dumps(rounded(result), indent=2))
    if args.save:
        from slr.files import write_json
        from slr.plots import Caption, save_figure, test_figures

        write_json(args.save / "result.json", result)
        caption = Caption.of(meta, args.set, condition_name(args.shuffle, args.reverse, result))
        for name, figure in test_figures(scored, glosses, caption, args.graphs).items():
            save_figure(figure, args.save / f"{name}.png")
        print(f"saved to {args.save}")


def condition_name(shuffle: int | None, reverse: bool, result: dict) -> str:
    """The frame order a result was measured with, as figure titles say it."""
    if reverse:
        return "reversed frames"
    if shuffle is not None:
        return f"frames shuffled (permutation of seed {shuffle}, {result['shannon_entropy']:.2f} bits)"
    return "ordered frames"


def cli() -> None:
    """Console entry point (`slr-test`)."""
    run_main(main)


if __name__ == "__main__":
    cli()
