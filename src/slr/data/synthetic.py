"""The embedded synthetic WLASL: signs whose only difference within a pair is the order of their frames.

Each pair of glosses is one sign: a handshape moving along a path at a place on the body, bare or in a coloured
glove; the second gloss of a pair plays the first one's frames in reverse. A model that ignores frame order can tell
the pairs apart but not the two signs of a pair, so ordered minus shuffled accuracy measures how much a model uses
temporal order. Signers vary in colours, position, scale, speed and noise; clips have idle frames before and after
the sign, marked by frame_start/frame_end exactly as WLASL marks them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from slr.data.metadata import SETS
from slr.data.video import write_frames
from slr.errors import UserError
from slr.params import SyntheticParams

# A hand pose: (x, y, hand scale), x and y in units of the signer's size around the chest.
Pose = tuple[float, float, float]
# Hand path per pair of words: t in [0, 1] -> pose. At every place, no path comes near another path, another's
# reverse or its own reverse (tests/test_synthetic.py checks), so glosses that share the other factors still differ.
Motion = Callable[[float], Pose]
PATHS: tuple[tuple[str, str, Motion], ...] = (
    ("up", "down", lambda t: (0.35, 0.7 - 1.5 * t, 1.0)),
    ("come", "go", lambda t: (0.9 - 1.6 * t, 0.1, 1.0)),
    ("open", "close", lambda t: (0.1, -0.1, 0.5 + 1.1 * t)),
    ("push", "pull", lambda t: (0.6 * math.cos(4.2 * t), 0.6 * math.sin(4.2 * t), 1.0)),
    ("give", "take", lambda t: (-0.7 + 1.4 * t, 0.6 - 1.2 * t, 1.0)),
    ("arrive", "leave", lambda t: (-0.8 + 1.6 * t, 0.35 * math.sin(6.0 * t), 1.0)),
)
HANDSHAPES = ("fist", "palm", "point", "flat", "cup", "vee")  # drawn by _draw_hand
# Where the sign happens: (name, dx, dy, amplitude); the path is scaled by amplitude, then moved by (dx, dy). The
# chest is the original signs' place; the smaller paths elsewhere keep the whole palm in the frame for every signer.
PLACES: tuple[tuple[str, float, float, float], ...] = (
    ("chest", 0.0, 0.0, 1.0),
    ("left", -0.4, 0.1, 0.6),
    ("right", 0.32, 0.1, 0.6),
    ("chin", 0.0, -0.45, 0.6),
    ("belly", 0.0, 0.38, 0.6),
)
# Signers' colours: each channel drawn from [low, high).
BACKGROUND, BODY, SKIN = (0, 90), (60, 160), (170, 256)
# Hand colour: bare (the signer's skin, as the original signs) or a glove, saturated so that it stands out from
# every signer's skin, clothes and background, and from the other gloves.
GLOVES: tuple[tuple[str, tuple[int, int, int] | None], ...] = (
    ("bare", None),
    ("red", (235, 30, 30)),
    ("green", (30, 235, 50)),
    ("blue", (40, 70, 245)),
    ("yellow", (245, 230, 25)),
    ("magenta", (235, 30, 230)),
    ("cyan", (25, 225, 235)),
)
MAX_PAIRS = 1000  # 2,000 glosses: the largest WLASL subset, asl2000
REST = (0.0, 1.2, 0.8)  # where the hand waits before and after the sign
SIGN_FRAMES = 24  # length of a sign at speed 1.0
MAX_IDLE = 6  # idle frames before / after a sign, at most


@dataclass(frozen=True)
class Sign:
    """One pair's sign: the glosses of its forward and reversed versions and indices into the factor tables."""

    glosses: tuple[str, str]
    handshape: int
    path: int
    place: int
    glove: int


def sign_of(pair: int) -> Sign:
    """The sign of pair `pair` (0-based): pairs 0-5 are the original six, bare-handed at the chest.

    Pairs come in rounds of six, one per handshape; round q shifts the paths by q and takes place q mod 5 and glove
    q mod 7. Since 6, 5 and 7 are coprime, rounds 0-209 meet every (path shift, place, glove) once (the Chinese
    remainder theorem): the first 1,260 pairs are all different, and path, place and glove all change from one round
    to the next, so asl100's 50 pairs already hold every value of every factor.
    """
    handshape, round_ = pair % len(HANDSHAPES), pair // len(HANDSHAPES)
    path = (handshape + round_) % len(PATHS)
    place, glove = round_ % len(PLACES), round_ % len(GLOVES)
    forward, backward, _ = PATHS[path]
    if pair >= len(PATHS):  # the original pairs keep their words; the others name every factor
        forward, backward = (f"{word}-{HANDSHAPES[handshape]}-{PLACES[place][0]}-{GLOVES[glove][0]}"
                             for word in (forward, backward))
    return Sign((forward, backward), handshape, path, place, glove)


def trajectory(sign: Sign, frames: int) -> list[Pose]:
    """The hand's poses over the `frames` frames of the pair's first gloss."""
    _, dx, dy, amplitude = PLACES[sign.place]
    motion = PATHS[sign.path][2]
    # At the chest (0, 0, 1) this is the motion's own pose, bit for bit: the original videos keep their bytes.
    return [(dx + amplitude * x, dy + amplitude * y, scale)
            for x, y, scale in (motion(t) for t in np.linspace(0.0, 1.0, frames))]


@dataclass(frozen=True)
class Signer:
    background: tuple[int, int, int]
    body: tuple[int, int, int]
    skin: tuple[int, int, int]
    offset: tuple[float, float]  # fraction of the frame
    scale: float
    speed: float
    noise: float  # std of per-pixel Gaussian noise, in grey levels


def generate(params: SyntheticParams, out_dir: Path) -> None:
    """Write `out_dir/WLASL_v0.3.json` and `out_dir/videos/<video_id>.mp4`, deterministically from params.seed."""
    if not 1 <= params.pairs <= MAX_PAIRS:
        raise UserError(f"params.yaml: data.synthetic.pairs must be 1..{MAX_PAIRS}, got {params.pairs}")
    for key in ("signers", "train_per_class", "val_per_class", "test_per_class", "fps"):
        if getattr(params, key) < 1:
            raise UserError(f"params.yaml: data.synthetic.{key} must be at least 1, got {getattr(params, key)}")
    if params.video_size < 32:
        raise UserError(f"params.yaml: data.synthetic.video_size must be at least 32 pixels, got {params.video_size}")
    signers = [_signer(np.random.default_rng([params.seed, 1, s])) for s in range(params.signers)]
    per_set = dict(zip(SETS, (params.train_per_class, params.val_per_class, params.test_per_class)))
    index = []
    next_id = 1
    for pair in range(params.pairs):
        sign = sign_of(pair)
        for reverse, gloss in zip((False, True), sign.glosses):
            instances = []
            for split, count in per_set.items():
                for _ in range(count):
                    video_id = f"{next_id:05d}"
                    rng = np.random.default_rng([params.seed, 2, next_id])
                    signer_id = int(rng.integers(params.signers))
                    frames, meta = render_clip(sign, reverse, signers[signer_id], params.video_size, rng)
                    write_frames(out_dir / "videos" / f"{video_id}.mp4", frames, params.fps)
                    instances.append(
                        {
                            **meta,
                            "fps": params.fps,
                            "instance_id": len(instances),
                            "signer_id": signer_id,
                            "source": "synthetic",
                            "split": split,
                            "url": f"synthetic://{params.seed}/{video_id}",
                            "variation_id": 0,
                            "video_id": video_id,
                        }
                    )
                    next_id += 1
            index.append({"gloss": gloss, "instances": instances})
    (out_dir / "WLASL_v0.3.json").write_text(json.dumps(index, indent=1) + "\n")


def _signer(rng: np.random.Generator) -> Signer:
    return Signer(
        background=tuple(int(v) for v in rng.integers(*BACKGROUND, 3)),
        body=tuple(int(v) for v in rng.integers(*BODY, 3)),
        skin=tuple(int(v) for v in rng.integers(*SKIN, 3)),
        offset=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.05, 0.05))),
        scale=float(rng.uniform(0.85, 1.15)),
        speed=float(rng.uniform(0.8, 1.25)),
        noise=float(rng.uniform(2.0, 10.0)),
    )


def render_clip(
    sign: Sign, reverse: bool, signer: Signer, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """Render one clip: idle frames, the sign (reversed for the pair's second gloss), idle frames.

    Returns uint8 (T, H, W, C) frames and the instance's `frame_start`, `frame_end` and `bbox`.
    """
    sign_len = max(8, round(SIGN_FRAMES / signer.speed))
    lead, tail = (int(v) for v in rng.integers(0, MAX_IDLE + 1, 2))
    poses = trajectory(sign, sign_len)
    if reverse:
        poses.reverse()
    centre = (size * (0.5 + signer.offset[0]), size * (0.55 + signer.offset[1]))
    unit = 0.25 * size * signer.scale
    colour = GLOVES[sign.glove][1] or signer.skin
    # Drawn in place into one array, the idle frames copied from one drawing: a quarter of the CPU time at 32 px.
    body = _draw_body(size, centre, unit, signer)
    idle = body.copy()
    _draw_hand(idle, centre, unit, REST, sign.handshape, colour)
    frames = np.empty((lead + sign_len + tail, size, size, 3), np.uint8)
    frames[:lead] = frames[lead + sign_len :] = idle
    frames[lead : lead + sign_len] = body
    for frame, pose in zip(frames[lead : lead + sign_len], poses):
        _draw_hand(frame, centre, unit, pose, sign.handshape, colour)
    noise = rng.normal(0.0, signer.noise, frames.shape)
    noise += frames
    frames = np.clip(noise, 0, 255, out=noise).astype(np.uint8)
    x1, y1 = (max(0, int(c - 1.6 * unit)) for c in centre)
    x2, y2 = (min(size - 1, int(c + 1.6 * unit)) for c in centre)
    meta = {"frame_start": lead + 1, "frame_end": -1 if tail == 0 else lead + sign_len, "bbox": [x1, y1, x2, y2]}
    return frames, meta


def _draw_body(size: int, centre: tuple[float, float], unit: float, signer: Signer) -> np.ndarray:
    frame = np.empty((size, size, 3), np.uint8)
    frame[:] = signer.background
    cx, cy = (int(c) for c in centre)
    head = (cx, int(cy - 1.1 * unit))
    cv2.rectangle(frame, (int(cx - 0.8 * unit), int(cy - 0.5 * unit)), (int(cx + 0.8 * unit), size), signer.body, -1)
    cv2.circle(frame, head, int(0.45 * unit), signer.skin, -1)
    return frame


def _draw_hand(
    frame: np.ndarray,
    centre: tuple[float, float],
    unit: float,
    pose: Pose,
    handshape: int,
    colour: tuple[int, int, int],
) -> None:
    """Draw one of the HANDSHAPES (fist, open palm, point, flat, C, V) at `pose` onto `frame`, in place."""
    x, y, scale = pose
    hx, hy = int(centre[0] + x * unit), int(centre[1] + y * unit)
    r = max(2, int(0.45 * unit * scale))
    width = max(1, r // 3)
    if handshape == 0:
        cv2.circle(frame, (hx, hy), r, colour, -1)
    elif handshape == 1:
        cv2.ellipse(frame, (hx, hy), (r, int(r * 0.8)), 0, 0, 360, colour, -1)
        for dx in (-r, -r // 3, r // 3, r):
            cv2.line(frame, (hx + dx // 2, hy), (hx + dx, hy - 2 * r), colour, width)
    elif handshape == 2:
        cv2.circle(frame, (hx, hy), int(r * 0.8), colour, -1)
        cv2.line(frame, (hx, hy), (hx + 2 * r, hy - 2 * r), colour, width)
    elif handshape == 3:
        cv2.rectangle(frame, (hx - 2 * r, hy - r // 2), (hx + 2 * r, hy + r // 2), colour, -1)
    elif handshape == 4:
        cv2.ellipse(frame, (hx, hy), (r, r), 0, 60, 300, colour, width + 1)
    else:
        cv2.line(frame, (hx, hy + r), (hx - r, hy - 2 * r), colour, width + 1)
        cv2.line(frame, (hx, hy + r), (hx + r, hy - 2 * r), colour, width + 1)
