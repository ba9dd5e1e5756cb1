"""The test set's per-clip outcome, committed beside the metrics (reports/predictions.json): what lets two runs be
compared clip by clip (a paired interval, McNemar's test) with neither checkpoint nor clips at hand.

The evaluate stage writes it, `slr-report` reads it. One JSON object whose `rows` hold one clip per line, with labels
and predictions as indices into `glosses`: at asl2000 (2,878 test clips, 2,000 glosses) the file stays near 120-140 kB,
where a record of named fields per clip would pass 300 kB. No floats, rows in the manifest's order: the same
predictions give the same bytes.

Kept to the standard library: the report's CI job installs no torch and no numpy for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from slr.errors import UserError
from slr.files import atomic_path

FORMAT = "slr per-clip predictions, version 1"
COLUMNS = ("video_id", "label", "ordered", "ordered_top5", "shuffled", "reversed")


@dataclass(frozen=True)
class Predictions:
    """Per test clip, in the manifest's order: its id, its label, the top-1 class with frames ordered, whether the
    label is among the 5 best with frames ordered, and the top-1 class with frames shuffled and reversed."""

    copy: str | None  # fingerprint of the WLASL copy the clips came from (the manifest's, as metrics/eval.json)
    shuffle: list[int]  # the frame permutation behind `shuffled`
    glosses: list[str]  # label index -> gloss
    video_ids: list[str]
    labels: list[int]
    ordered: list[int]
    ordered_top5: list[bool]
    shuffled: list[int]
    reversed: list[int]

    def __post_init__(self) -> None:
        columns = (self.labels, self.ordered, self.ordered_top5, self.shuffled, self.reversed)
        lengths = {len(column) for column in columns}
        if lengths != {len(self.video_ids)}:
            raise ValueError(f"per-clip columns of unequal lengths: {len(self.video_ids)} ids, {sorted(lengths)}")

    def hits(self, column: str) -> list[bool]:
        """Per clip: whether its label is the top-1 of `column` ("ordered", "shuffled", "reversed")."""
        return [p == y for p, y in zip(getattr(self, column), self.labels)]

    def by_id(self) -> dict[str, tuple[str, int]]:
        """Per clip id: (its gloss, its row), for matching the clips of two runs."""
        return {vid: (self.glosses[label], row) for row, (vid, label) in enumerate(zip(self.video_ids, self.labels))}


def dumps(p: Predictions) -> str:
    """The file's text: a JSON object with one row (clip) per line."""
    head = {"format": FORMAT, "set": "test", "copy": p.copy, "shuffle": p.shuffle, "glosses": p.glosses,
            "columns": list(COLUMNS)}
    rows = zip(p.video_ids, p.labels, p.ordered, (int(t) for t in p.ordered_top5), p.shuffled, p.reversed)
    lines = ",\n".join(json.dumps(list(row), separators=(",", ":")) for row in rows)
    return json.dumps(head, separators=(", ", ": "))[:-1] + f', "rows": [\n{lines}\n]}}\n'


def write_predictions(path: Path, p: Predictions) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(dumps(p))


def loads(text: str, where: str) -> Predictions:
    """Parse a predictions file's text; `where` names it in the one-line error a damaged or foreign file gets."""
    try:
        raw = json.loads(text)
        if raw["format"] != FORMAT or raw["columns"] != list(COLUMNS):
            raise ValueError(f"format {raw['format']!r}")
        columns = list(zip(*raw["rows"])) or [()] * len(COLUMNS)
        ids, labels, ordered, top5, shuffled, reversed_ = (list(c) for c in columns)
        return Predictions(raw["copy"], raw["shuffle"], raw["glosses"], [str(v) for v in ids], labels, ordered,
                           [bool(t) for t in top5], shuffled, reversed_)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{where} is not a per-clip predictions file this version reads ({exc}); make it again "
                        "with `dvc repro evaluate`") from None
