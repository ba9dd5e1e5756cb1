"""The data-quality report: which videos gave clips, which were skipped and why, and WLASL's duplicate clips.

The full report (with video ids) goes into the clips folder as `quality.json`; the DVC metric `metrics/data.json`
is the same report with every id list replaced by its length, so it stays small and identical on a rerun.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slr.data.metadata import Index, compare_nslt, cross_split_copies, duplicate_groups, load_nslt
from slr.errors import UserError

REASONS: tuple[str, ...] = ("missing", "unreadable", "zero_frame", "truncated")  # why a video gave no clip
RANGES: tuple[str, ...] = ("applied", "ignored", "clamped")  # clip.sign_span's labels, but "whole"


def set_quality(records: list[dict], num_frames: int, crop: str) -> dict:
    """One set's report from its per-clip records ({video_id, frames, problem, fallback, range}, in index order),
    made with `crop`. `range_*`: how each stored clip's frame range was taken (clip.sign_span): applied to a source
    video, ignored in a clip already cut to it, or clamped to a video that fits neither."""
    stored = [r for r in records if not r["problem"]]
    skipped = {reason: [r["video_id"] for r in records if r["problem"] == reason] for reason in REASONS}
    fallback = [r["video_id"] for r in stored if r["fallback"]]  # centre crop: box outside the frame, nobody found
    return {
        "listed": len(records),
        "present": len(records) - len(skipped["missing"]),
        "readable": len(stored),
        "short": [r["video_id"] for r in stored if r["frames"] < num_frames],  # kept: frames repeat evenly
        "bbox_fallback": fallback if crop == "bbox" else [],
        "person_fallback": fallback if crop == "person" else [],
        **{f"range_{how}": [r["video_id"] for r in stored if r["range"] == how] for how in RANGES},
        "skipped": skipped,
    }


def check_usable(bad: dict[str, tuple[int, int]], max_missing: float, what: str, video_dir: Path) -> None:
    """Fail with one line if any set has more than `max_missing` of its videos `what` ({set: (bad, listed)})."""
    for name, (count, listed) in bad.items():
        if listed and count / listed > max_missing:
            raise UserError(
                f"{name} set: {count} of {listed} videos {what} ({count / listed:.0%}, over preprocess.max_missing "
                f"{max_missing}); put the videos in {video_dir} or raise preprocess.max_missing"
            )


def select(index: Index, drop_cross_split_duplicates: bool, nslt_path: Path) -> tuple[Index, dict]:
    """The instances to preprocess, and the dataset-level report: duplicate clips and the nslt comparison.

    Duplicates are always reported; with `drop_cross_split_duplicates` the evaluation copies of clips that also
    stand in an earlier set are left out (see metadata.cross_split_copies for which copy stays).
    """
    groups = duplicate_groups(index)
    dropped = cross_split_copies(groups) if drop_cross_split_duplicates else []
    report: dict[str, Any] = {
        "duplicates": {
            "groups": [[i.video_id for i in g] for g in groups],
            "cross_gloss": [[i.video_id for i in g] for g in groups if len({i.label for i in g}) > 1],
            "cross_split": [[i.video_id for i in g] for g in groups if len({i.split for i in g}) > 1],
            "dropped": dropped,
        }
    }
    if nslt_path.is_file():
        nslt = compare_nslt(index, load_nslt(nslt_path))
        report["nslt"] = {"matched": nslt.matched, "absent_from_index": nslt.absent_from_index,
                          "disagreeing": nslt.disagreeing}
    return index.without(set(dropped)), report


def headline(report: dict) -> dict:
    """The few data numbers a comparison of runs needs (the DVC metric): classes, clips stored per set, and the
    videos listed but not stored (missing, unreadable, ...). The full counts stay in the data report."""
    sets = [name for name in ("train", "val", "test") if name in report]
    return {"classes": report["classes"], **{f"{name}_clips": report[name]["readable"] for name in sets},
            "skipped": sum(report[name]["listed"] - report[name]["readable"] for name in sets)}


def counts(report: Any) -> Any:
    """The report with every list replaced by its length: the small, git-friendly DVC metric."""
    if isinstance(report, dict):
        return {key: counts(value) for key, value in report.items()}
    return len(report) if isinstance(report, list) else report
