"""Pretrained weights from the torch hub cache, safe offline: one shared path for every torchvision weights file.

torch.hub keeps downloaded weights in $TORCH_HOME/hub/checkpoints/<file name of the URL> and reads them from there
once present. Offline, urllib would wait for the server with no timeout of its own, and a missing file ends in a
traceback; here each network wait is capped and the failure is one line that says where to put the file by hand.
"""

from __future__ import annotations

import socket
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch

from slr.errors import UserError

# A download that cannot reach its server must fail in seconds, not hang: urllib has no timeout of its own.
DOWNLOAD_TIMEOUT_S = 10.0


def cache_path(url: str) -> Path:
    """Where torch.hub keeps the file of `url`: $TORCH_HOME/hub/checkpoints/<its file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def load_state(url: str, what: str, instead: str) -> dict[str, torch.Tensor]:
    """The state dict at `url`, read from the hub cache or downloaded into it (hash-checked, written atomically).

    Raises UserError naming `what` could not be downloaded, the URL, the cache file to put it at, and `instead`
    (the user's other way out, e.g. "or set train.pretrained to a local weights file").
    """
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True, weights_only=True)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise UserError(
            f"cannot download {what} ({getattr(exc, 'reason', exc)}); offline, fetch {url} by hand and put it at "
            f"{cache_path(url)} (the torch hub cache under TORCH_HOME), {instead}"
        ) from None


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
