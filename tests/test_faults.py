"""Faults and corrupt files: each ends in one `error:` line that names the file and the fix, nothing is left behind,
and nothing stale is taken for a result."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import slr.data.store as store
from slr.data.store import create_shard, write_clip
from slr.errors import UserError
from slr.files import atomic_path
from slr.models import build_model

from conftest import REPO, tiny_params_file, repro_until_epoch_one, tool_env

STAGES = REPO / "stages"


def _stage(name: str, *args: str | Path, params: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(STAGES / f"{name}.py"), *map(str, args)]
    if params is not None:
        command += ["--params", str(params)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=tool_env())


def _one_error(result: subprocess.CompletedProcess) -> str:
    """The single `error:` line of a failed command; no traceback beside it."""
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]



def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- damaged checkpoints, shards and manifests --------------------------------------------------------------------

def test_truncated_best_checkpoint(repo: Path, tmp_path: Path) -> None:
    best = tmp_path / "best.pth"
    shutil.copyfile(repo / "models/best.pth", best)
    _truncate(best)
    error = _one_error(_stage("evaluate", best, repo / "data/clips", tmp_path / "m.json", tmp_path / "r.json",
                              tmp_path / "plots", tmp_path / "p.json", params=tiny_params_file(tmp_path)))
    assert error == (f"error: {best} is damaged (not a torch checkpoint: truncated, or another format); run `dvc "
                     "repro train`, or `dvc checkout models/best.pth` to restore yours")
    assert not (tmp_path / "m.json").exists()


def test_truncated_last_checkpoint_says_to_delete_it(repo: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(repo / "models/last.pth", models / "last.pth")
    _truncate(models / "last.pth")
    error = _one_error(_stage("train", repo / "data/clips", models, tmp_path / "live", params=tiny_params_file(tmp_path)))
    assert error == (f"error: {models / 'last.pth'} is damaged (not a torch checkpoint: truncated, or another "
                     f"format); delete {models / 'last.pth'} to train this run from scratch")


@pytest.fixture()
def clips(repo: Path, tmp_path: Path) -> Path:
    """A copy of the test repo's clips that a test may damage."""
    return Path(shutil.copytree(repo / "data/clips", tmp_path / "clips"))


@pytest.mark.parametrize("how", ["truncated", "missing", "not a shard"])
def test_damaged_shard_in_train_evaluate_and_slr_test(repo: Path, tmp_path: Path, clips: Path, how: str) -> None:
    shard = next(clips.glob("val-*.npy"))
    if how == "truncated":
        _truncate(shard, 0.7)
    elif how == "missing":
        shard.unlink()
    else:
        shard.write_bytes(b"just text")
    expected = {"truncated": f"error: shard {shard} is truncated (",
                "missing": f"error: shard {shard} is missing; ",
                "not a shard": f"error: shard {shard} is damaged (no valid .npy header); "}[how]
    fix = "restore the clips with `dvc checkout data/clips`, or make them again with `dvc repro -f preprocess`"
    params = tiny_params_file(tmp_path)
    runs = [
        lambda: subprocess.run([sys.executable, "-c", "from slr.partial import cli; cli()", "--checkpoint",
                                str(repo / "models/best.pth"), "--clips", str(clips), "--set", "val"],
                               capture_output=True, text=True, timeout=300),
        lambda: _stage("train", clips, tmp_path / "models", tmp_path / "live", params=params),
        lambda: _stage("evaluate", repo / "models/best.pth", clips, tmp_path / "m.json", tmp_path / "r.json",
                       tmp_path / "plots", tmp_path / "p.json", params=params),
    ]
    for run in runs if how == "truncated" else runs[:1]:  # every reader opens a set through store.ClipArray
        error = _one_error(run())
        assert error.startswith(expected) and error.endswith(fix), error


def test_truncated_manifest(repo: Path, tmp_path: Path, clips: Path) -> None:
    _truncate(clips / "manifest.json")
    error = _one_error(_stage("train", clips, tmp_path / "models", tmp_path / "live", params=tiny_params_file(tmp_path)))
    assert error == (f"error: {clips / 'manifest.json'} is damaged (not the manifest preprocess writes); restore the "
                     "clips with `dvc checkout data/clips`, or make them again with `dvc repro -f preprocess`")


# --- pretrained weights that are not weights -----------------------------------------------------------------------

@pytest.mark.parametrize(("content", "holds"), [
    (lambda path: torch.save([torch.zeros(2)], path), "holds a list, not a state dict"),
    (lambda path: path.write_bytes(os.urandom(4096)), "is not a torch weights file"),
    (lambda path: path.write_text("these are not weights\n" * 20), "is not a torch weights file"),
])
def test_pretrained_files_that_are_not_weights(repo: Path, tmp_path: Path, content, holds: str) -> None:
    weights = tmp_path / "weights.pth"
    content(weights)
    with pytest.raises(UserError) as exc:
        build_model("R3D_18", num_classes=4, dropout=0.2, pretrained=str(weights))
    error = f"error: {exc.value}"
    assert error.startswith(f"error: train.pretrained: {weights} ") and holds in error and "\n" not in error
    assert "weights_only" not in error and "(101)" not in error  # never torch's advice to load unsafely


def test_pretrained_that_is_not_weights_stops_the_train_stage_in_one_line(repo: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights.pth"
    torch.save([torch.zeros(2)], weights)  # a valid torch file holding a list: an AttributeError traceback before
    params = tiny_params_file(tmp_path, pretrained=str(weights))
    error = _one_error(_stage("train", repo / "data/clips", tmp_path / "models", tmp_path / "live", params=params))
    assert error.startswith(f"error: train.pretrained: {weights} holds a list, not a state dict")


# --- writes that do not complete ----------------------------------------------------------------------------------

def test_short_writes_complete_the_clip_and_no_progress_is_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    shard = tmp_path / "train-00000.npy"
    create_shard(shard, 2, (3, 4, 4, 3))
    frames = [np.full((4, 4, 3), i + 1, np.uint8) for i in range(3)]
    real = os.pwritev

    def short(fd: int, buffers: list, offset: int) -> int:  # the kernel may write less than asked
        first = memoryview(buffers[0])[:7]
        return real(fd, [first], offset)

    monkeypatch.setattr(store.os, "pwritev", short)
    write_clip(shard, 1, frames)
    clip = np.load(shard)[1]
    assert np.array_equal(clip, np.stack(frames)) and not np.load(shard)[0].any()
    monkeypatch.setattr(store.os, "pwritev", lambda fd, buffers, offset: 0)
    with pytest.raises(OSError) as exc:
        write_clip(shard, 0, frames)
    assert exc.value.errno == errno.ENOSPC


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 24 MB tmpfs, where root may mount one (the full-disk tests skip elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_in_train_is_one_line_and_leaves_no_partial_file(repo: Path, tmp_path: Path, small_disk: Path) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (20 * 2**20))  # leave less room than R3D_18's 128 MB checkpoint needs
    models = small_disk / "models"
    error = _one_error(_stage("train", repo / "data/clips", models, tmp_path / "live", params=tiny_params_file(tmp_path)))
    assert error.startswith(f"error: cannot write {models / 'best.pth'}: no space left on its disk (")
    assert "free some space and rerun" in error
    assert not list(models.glob(".*.tmp")) and not (models / "best.pth").exists()


def test_full_disk_in_preprocess_is_one_line(repo: Path, tmp_path: Path, small_disk: Path) -> None:
    params = yaml.safe_load(tiny_params_file(tmp_path).read_text())
    params["preprocess"]["frame_size"] = 64  # 8 x 64 x 64 x 3 = 98 kB a clip: 44 clips need more than is left
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (small_disk / "filler").write_bytes(b"\0" * (21 * 2**20))
    error = _one_error(_stage("preprocess", repo / "data/raw", small_disk / "clips", tmp_path / "m.json",
                              tmp_path / "r.json", params=tmp_path / "params.yaml"))
    assert re.fullmatch(r"error: not enough space left on the device for the clips: 44 clips need about 21 MB in "
                        r"\S+, \d MB are free; free \d+ MB \(or lower preprocess.frame_size or num_frames\) and rerun",
                        error), error
    assert not (small_disk / "clips").exists()


# --- leftovers of a killed run -------------------------------------------------------------------------------------

def test_a_killed_writers_temp_file_goes_at_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "models" / "last.pth"
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from slr.files import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half a checkpoint")
            print(tmp, flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    leftover = Path(writer.stdout.readline().strip())
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert leftover.exists() and leftover.name.startswith(".last.pth.") and leftover.name.endswith(".tmp")
    shutil.copyfile(REPO / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(leftover.relative_to(tmp_path))], cwd=tmp_path)
    assert ignored.returncode == 0  # git ignores it: `git add -A` never commits one
    mine = tmp_path / "models" / f".last.pth.{os.getpid()}.x.tmp"
    mine.write_bytes(b"a live writer's")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete" and not leftover.exists() and mine.exists()


# --- params changed under a running stage ---------------------------------------------------------------------------

@pytest.mark.slow
def test_exp_run_during_repro_cannot_mix_params(repo: Path, tmp_path: Path) -> None:
    root, repro = repro_until_epoch_one(repo, tmp_path / "repo")
    # a second experiment started in the same workspace: DVC's lock stops it, but not before Hydra rewrote params.yaml
    subprocess.run(["dvc", "exp", "run", "-S", "train.head_lr=0.002"], cwd=root, env=tool_env(), capture_output=True,
                   timeout=300)
    out, err = repro.communicate(timeout=600)
    assert repro.returncode != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "params.yaml changed while stage 'train' ran (train" in errors[0], err
    assert "dvc exp run --queue" in errors[0]
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] != 3  # the mixed run is not recorded
