"""Batches: DataLoaders over the preprocessed clips, for training (shuffled, this process's share) and for scoring
(every clip once, in order), with the workers and pinned memory a GPU needs."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from slr.data.dataset import ClipDataset
from slr.distributed import Process


def train_loader(dataset: ClipDataset, batch_size: int, seed: int, process: Process) -> DataLoader:
    """This process's shuffled share of the train set; the order is a pure function of (seed, epoch)."""
    sampler = DistributedSampler(dataset, process.world_size, process.rank, shuffle=True, seed=seed)
    return _loader(dataset, batch_size, process, sampler)


def eval_loader(dataset: Dataset, batch_size: int, process: Process) -> DataLoader:
    """This process's share of an evaluation set, in order: every clip exactly once over all processes (no padding,
    unlike DistributedSampler, so summed scores are exact)."""
    share = dataset if process.world_size == 1 else Subset(dataset, range(process.rank, len(dataset),
                                                                        process.world_size))
    return _loader(share, batch_size, process)


def _loader(dataset: Dataset, batch_size: int, process: Process, sampler: Sampler | None = None) -> DataLoader:
    # Workers are started afresh every epoch (not persistent): each holds a copy of the dataset, and a persistent
    # copy would never see ClipDataset.set_epoch, repeating the first epoch's crops and flips for the whole run.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=process.loader_workers,
                      pin_memory=process.device.type == "cuda")
