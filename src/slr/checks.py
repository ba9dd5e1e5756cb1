"""Checks of a whole experiment that need the model zoo or the machine, not only params.yaml's types.

The `check` stage runs them before any other stage: DVC deletes a stage's outputs before running it, so a typo met
by the train stage (`-S model=R3D18`, a crop larger than the frames) would cost the finished run's outputs. The
stages run the same checks again where they use the values, so a stage run by hand is no less safe.
"""

from __future__ import annotations

from slr.devices import CPU_FIX, EVALUATE_CPU_FIX, check_torch_sees, decide, read_machine
from slr.errors import UserError
from slr.models import check_input
from slr.params import Params


def check_recipe(model_name: str, num_frames: int, frame_size: int, crop_size: int) -> None:
    """Fail with one line if `model_name` is unknown or cannot train on `crop_size` crops of clips of `num_frames`
    frames of `frame_size` x `frame_size`."""
    check_input(model_name, num_frames, crop_size)  # an unknown model name fails here too, listing the valid ones
    if crop_size > frame_size:
        raise UserError(f"train.crop_size {crop_size} is larger than preprocess.frame_size {frame_size}; lower the "
                        "crop or raise the frame size")


def check_experiment(params: Params) -> dict[str, str]:
    """Everything about `params` that can be known before the data is read; returns the device each of the train
    and evaluate stages will use ("cpu" or "cuda")."""
    check_recipe(params.model, params.preprocess.num_frames, params.preprocess.frame_size, params.train.crop_size)
    return check_devices(params)


def check_devices(params: Params) -> dict[str, str]:
    """The train and evaluate stages' device decisions (`slr.devices.decide`), made here first and confirmed with
    torch: a GPU that this torch build cannot use stops the experiment before any stage deletes its outputs, with the
    driver, what the build needs and the fix. The stages decide again when they run (this stage is skipped while
    params.yaml is unchanged, and the machine may have changed)."""
    p, machine = params.train, read_machine()  # the driver asked once (without NVML, that is a torch subprocess)
    train = decide(p.device, setting="train.device", count=p.nproc_per_node, amp=p.amp, machine=machine)
    evaluate = decide(params.evaluate.device, setting="evaluate.device", cpu_fix=EVALUATE_CPU_FIX, machine=machine)
    for decision, count, cpu_fix in ((train, p.nproc_per_node, CPU_FIX), (evaluate, 1, EVALUATE_CPU_FIX)):
        if decision.device == "cuda":
            check_torch_sees(decision, count, cpu_fix)
    return {"train": train.device, "evaluate": evaluate.device}
