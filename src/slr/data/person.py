"""Finding the signer (`preprocess.crop: person`): people detected on a few frames of a clip, as one box.

WLASL's boxes are in the source videos' pixels, so they do not fit a resized copy (the release's 256x256 clips).
Like the original project, which ran YOLO, we detect people instead and take the union of their boxes over a few
frames: the signer's whole reach, arms included. The detector is torchvision's SSDlite320 MobileNetV3-Large (COCO):
of torchvision's COCO detectors it is the cheapest on a CPU, 2.4-2.6x cheaper a frame than Faster R-CNN
MobileNetV3-Large-320-FPN (`benchmarks/preprocess_throughput.py --detectors`, figures in BENCHMARKS.md), and a signer
facing the camera is the easy case of COCO's most frequent class. Its weights come through slr.hub (the torch hub cache,
one-line error offline); each preprocess worker process holds one detector, run on one thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import cv2
import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights, ssdlite320_mobilenet_v3_large

from slr.hub import load_state

WEIGHTS = SSDLite320_MobileNet_V3_Large_Weights.COCO_V1
PERSON = WEIGHTS.meta["categories"].index("person")  # COCO label 1
MIN_SCORE = 0.5  # a detection below this is not a person; the detector's own threshold (0.001) keeps everything
FRAMES = 4  # frames of a clip searched: spread over the sign, so the box holds the hands wherever they go


def architecture() -> nn.Module:
    """The detector without weights (nothing is downloaded): the COCO classes, keeping only boxes above MIN_SCORE."""
    return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                         num_classes=len(WEIGHTS.meta["categories"]), score_thresh=MIN_SCORE)


@cache
def detector() -> nn.Module:
    """The COCO-trained detector, built once per process (preprocess builds it before its workers fork)."""
    model = architecture()
    model.load_state_dict(load_state(WEIGHTS.url, "the person detector's COCO weights (preprocess.crop: person)",
                                     "or set preprocess.crop to center"))
    return model.eval()


def fingerprint() -> dict[str, str]:
    """What besides this code decides the boxes found: the weights file and the libraries that run it."""
    return {"weights": WEIGHTS.url, "torch": torch.__version__, "torchvision": torchvision.__version__}


def find_person(frames: Sequence[np.ndarray]) -> tuple[int, int, int, int] | None:
    """The union of the people found on the BGR `frames` (x1, y1, x2, y2 in their pixels), or None: nobody."""
    images = [torch.from_numpy(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float().div_(255)
              for f in frames]
    with torch.inference_mode():
        found = detector()(images)
    return union_box([box for d in found for box, label, score in zip(d["boxes"].tolist(), d["labels"].tolist(),
                                                                      d["scores"].tolist())
                      if label == PERSON and score >= MIN_SCORE])


def union_box(boxes: Sequence[Sequence[float]]) -> tuple[int, int, int, int] | None:
    """The smallest whole-pixel box holding every (x1, y1, x2, y2) box; None for no box."""
    if not boxes:
        return None
    x1, y1 = (math.floor(min(b[k] for b in boxes)) for k in (0, 1))
    x2, y2 = (math.ceil(max(b[k] for b in boxes)) for k in (2, 3))
    return x1, y1, x2, y2
