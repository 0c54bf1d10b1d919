# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Dry run of a config: a few training iterations on a synthetic mini
dataset in the real on-disk format, then one validation with the config's
own metric (the library behind ``tools/misc/dry_run.py``).

:func:`dry_run` loads an mmpretrain / mmdet / mmseg config, writes a mini
dataset for every dataset type it uses (rank 0; other ranks wait), rewrites
the config (:mod:`.dry_run_config`) and runs the real MMEngine ``Runner``.
Distributed runs (``launcher='pytorch'``, under torchrun) start their process
group through :func:`mm_efficientconv.compat.init_distributed` (``gloo``
without a GPU) unless the caller already did; a group :func:`dry_run` started
is destroyed when it returns.
"""
import json
import os.path as osp
import shutil
from contextlib import ExitStack
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.hooks import Hook

from .cifar import cifar_integrity_check_disabled, write_cifar10, write_cifar100
from .cityscapes import write_cityscapes
from .coco import write_coco
from .dry_run_config import (DEFAULT_MAX_SIZE, UnsupportedDatasetError, adapt_runtime,
                             detect_formats, headline_metric, point_evaluators, point_leaf,
                             shrink_factor, shrink_sizes, task_of)
from .fine_grained import write_stanford_dogs
from .imagenet import write_imagenet
from .voc import write_voc12aug

RESULT_FILE = 'dry_run_result.json'
DATA_DIR = 'dry_run_data'

# format -> writer call (mini sizes: 4 training images (2 iterations x batch 2, or 1 per
# process and batch in 2-process runs), 2 validation images: one validation batch)
WRITERS: Dict[str, Callable[[str], Dict]] = {
    'coco': lambda root: write_coco(
        root, num_images=4, image_size=(128, 96), num_classes=3, num_val_images=2),
    'cityscapes': lambda root: write_cityscapes(
        root, num_images=4, image_size=(128, 64), num_val_images=2),
    'voc12aug': lambda root: write_voc12aug(
        root, num_images=4, image_size=(96, 72), num_val_images=2, num_aug_images=2),
    'cifar10': lambda root: write_cifar10(root, num_images=5, num_val_images=2),
    'cifar100': lambda root: write_cifar100(root, num_images=5, num_val_images=2),
    'imagenet': lambda root: write_imagenet(
        root, num_images=4, image_size=(80, 64), num_classes=4, num_val_images=2),
    'stanford_dogs': lambda root: write_stanford_dogs(
        root, num_images=4, image_size=(80, 64), num_classes=2, num_val_images=2),
}

__all__ = ['dry_run', 'prepare', 'UnsupportedDatasetError', 'WRITERS', 'RESULT_FILE', 'DATA_DIR']


class _DryRunRecorder(Hook):
    """Records the loss keys of the last training step and the validation
    metrics."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.loss_keys: List[str] = []
        self.metrics: Optional[Dict[str, Any]] = None

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if isinstance(outputs, dict):
            self.loss_keys = sorted(k for k in outputs if 'loss' in k)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.metrics = dict(metrics or {})


def _jsonable(value: Any) -> Any:
    if hasattr(value, 'tolist'):  # tensors, numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def _rank() -> int:
    return torch_dist.get_rank() if _distributed() else 0


def prepare(cfg: Config,
            work_dir: str,
            iters: int = 2,
            max_size: Optional[int] = None,
            launcher: str = 'none',
            save_checkpoint: bool = False) -> Tuple[Dict, str]:
    """Writes the mini datasets under ``<work_dir>/dry_run_data`` (rank 0; in
    a distributed run the other ranks wait for it) and rewrites ``cfg`` in
    place to use them, with smaller images and a short schedule.

    Args:
        cfg (mmengine.Config): The config, modified in place.
        work_dir (str): The run's work directory.
        iters (int): Training iterations. Defaults to 2.
        max_size (int, optional): Largest crop (else resize) side after
            shrinking. Defaults to None: 128 for detection, 64 for
            segmentation and classification.
        launcher (str): ``'none'`` or the launcher of the (initialised)
            process group. Defaults to ``'none'``.
        save_checkpoint (bool): Save a checkpoint after training. Defaults
            to False.

    Returns:
        tuple[dict, str]: The formats per dataloader
        (:func:`~.dry_run_config.detect_formats`) and the data directory.

    Raises:
        UnsupportedDatasetError: A dataset type has no mini-dataset writer.
    """
    formats = detect_formats(cfg)
    task = task_of(formats)
    data_dir = osp.abspath(osp.join(work_dir, DATA_DIR))
    needed = sorted({fmt for leaves in formats.values() for fmt, _ in leaves})
    infos: Dict[str, Dict] = {}
    if _rank() == 0:
        if osp.isdir(data_dir):
            shutil.rmtree(data_dir)
        for fmt in needed:
            infos[fmt] = WRITERS[fmt](osp.join(data_dir, fmt))
    if _distributed():
        shared = [infos]
        torch_dist.broadcast_object_list(shared, src=0)  # also waits for rank 0's files
        infos = shared[0]
    for key, leaves in formats.items():
        role = 'train' if key == 'train_dataloader' else 'val'
        for fmt, leaf in leaves:
            point_leaf(leaf, fmt, infos[fmt], role)
    point_evaluators(cfg, formats)
    shrink_sizes(cfg, shrink_factor(cfg, max_size or DEFAULT_MAX_SIZE[task]))
    adapt_runtime(cfg, work_dir, iters=iters, launcher=launcher,
                  save_checkpoint=save_checkpoint, task=task)
    return formats, data_dir


def dry_run(config,
            work_dir: str,
            iters: int = 2,
            max_size: Optional[int] = None,
            launcher: str = 'none',
            keep_data: bool = False,
            save_checkpoint: bool = False,
            cfg_options: Optional[dict] = None) -> Dict[str, Any]:
    """Trains ``config`` for ``iters`` iterations on a mini dataset, then
    validates once with its metric.

    Args:
        config (str | mmengine.Config): The config (a ``Config`` is changed
            in place).
        work_dir (str): Directory of the logs, the data and
            ``dry_run_result.json`` (written by rank 0).
        iters (int): Training iterations (>= 1). Defaults to 2.
        max_size (int, optional): Largest crop (else resize) side after
            shrinking (>= 16). Defaults to None (per task: det 128, seg 64,
            cls 64).
        launcher (str): ``'none'`` or ``'pytorch'`` (torchrun). Defaults to
            ``'none'``.
        keep_data (bool): Keep the mini dataset afterwards. Defaults to False.
        save_checkpoint (bool): Save a checkpoint after training. Defaults
            to False.
        cfg_options (dict, optional): Overrides applied to the config before
            the dry-run changes. Defaults to None.

    Returns:
        dict: ``config``, ``iters``, ``metric_key`` and ``metric`` (the
        headline metric; ``metric_key`` not in ``metrics`` when validation
        did not return it), ``metrics``, ``loss_keys``, ``world_size``.

    Raises:
        UnsupportedDatasetError: A dataset type has no mini-dataset writer
            (checked before anything is written or started).
        ValueError: Bad ``iters``, ``max_size`` or ``launcher``.
    """
    from mmengine.runner import Runner

    from mm_efficientconv.compat import init_distributed
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f'iters must be an int >= 1, got {iters!r}')
    if max_size is not None and (not isinstance(max_size, int) or max_size < 16):
        raise ValueError(f'max_size must be None or an int >= 16, got {max_size!r}')
    if launcher not in ('none', 'pytorch'):
        raise ValueError(f"launcher must be 'none' or 'pytorch', got {launcher!r}")
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    detect_formats(cfg)  # fail before starting anything
    owns_group = launcher != 'none' and not _distributed()
    if owns_group:
        init_distributed(launcher)
    formats, data_dir = prepare(cfg, work_dir, iters=iters, max_size=max_size,
                                launcher=launcher, save_checkpoint=save_checkpoint)
    recorder = _DryRunRecorder()
    with ExitStack() as stack:
        if any(fmt in ('cifar10', 'cifar100') for leaves in formats.values() for fmt, _ in leaves):
            stack.enter_context(cifar_integrity_check_disabled())
        runner = Runner.from_cfg(cfg)
        runner.register_hook(recorder, priority='VERY_LOW')
        runner.train()

    metrics = recorder.metrics or {}
    key, value = headline_metric(cfg, metrics)
    result = dict(
        config=config if isinstance(config, str) else cfg.filename,
        iters=iters,
        metric_key=key,
        metric=_jsonable(value),
        metrics={k: _jsonable(v) for k, v in metrics.items()},
        loss_keys=recorder.loss_keys,
        world_size=torch_dist.get_world_size() if _distributed() else 1)
    if _rank() == 0:
        with open(osp.join(work_dir, RESULT_FILE), 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=2)
    if _distributed():
        torch_dist.barrier()
    if _rank() == 0 and not keep_data:
        shutil.rmtree(data_dir, ignore_errors=True)
    if owns_group:
        torch_dist.destroy_process_group()
    return result
