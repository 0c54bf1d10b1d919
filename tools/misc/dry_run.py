# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Dry-run a config end to end on a tiny synthetic dataset.

Loads an mmpretrain / mmdet / mmseg config, writes a mini dataset in the real
on-disk format of every dataset type the config uses
(:mod:`mm_efficientconv.testing`), points all dataloaders (and the COCO
evaluator) at it, shrinks what makes a run expensive and runs the real MMEngine
``Runner``: ``--iters`` training iterations, then one validation with the
config's own metric, which is printed (``dry-run metric: <key> = <value>``) and
written to ``<work-dir>/dry_run_result.json``.

What is changed, and nothing else:

* data: ``data_root`` (and, where the config's relative paths do not exist in
  the standard layout, ``ann_file``/``data_prefix``); ``download=False``;
* pipelines: every size (``scale``, ``crop_size``, ``size``, ...) scaled by one
  factor so the largest crop (else the largest resize target) is at most
  ``--max-size`` pixels; transform types are kept; the data preprocessor's
  ``size`` and a slide-inference ``crop_size``/``stride`` follow;
* dataloaders: batch size 2, no workers;
* schedule: ``IterBasedTrainLoop`` of ``--iters`` iterations, validation at the
  end; logging every iteration; no checkpoints (``--save-checkpoint`` keeps
  one at the end); ``load_from``/``resume`` and ``Pretrained`` ``init_cfg``s
  (and ``pretrained=...``) dropped, so nothing downloads;
* detection ``score_thr`` set to 0 so an untrained detector still returns
  boxes and COCO mAP can be computed; the detector's sample / proposal counts
  capped (``num`` <= 64, ``nms_pre`` <= 200, ``max_per_img`` <= 100);
* without CUDA: SyncBN -> BN, ``AmpOptimWrapper`` -> ``OptimWrapper``, the
  ``gloo`` backend, and DDP without ``device_ids``.

Examples:
    python tools/misc/dry_run.py configs/bsconv/resnet20_1xb128_cifar10.py \\
        --work-dir work_dirs/dry
    python -m torch.distributed.run --nproc_per_node 2 tools/misc/dry_run.py \\
        CONFIG --work-dir work_dirs/dry --launcher pytorch

Exit status: 0 on success, 2 when a dataset type of the config has no mini
dataset writer (the message lists the supported types), 1 on any other error.
"""
import argparse
import copy
import json
import os
import os.path as osp
import shutil
import sys
from contextlib import ExitStack
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import mm_efficientconv  # noqa: F401  (registries and compat fixes first)
import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mm_efficientconv import testing

EXIT_UNSUPPORTED = 2
RESULT_FILE = 'dry_run_result.json'
DATA_DIR = 'dry_run_data'

# dataset type -> (format name, task)
DATASET_FORMATS: Dict[str, Tuple[str, str]] = {
    'CocoDataset': ('coco', 'det'),
    'CityscapesDataset': ('cityscapes', 'seg'),
    'PascalVOCDataset': ('voc12aug', 'seg'),
    'CIFAR10': ('cifar10', 'cls'),
    'CIFAR100': ('cifar100', 'cls'),
    'ImageNet': ('imagenet', 'cls'),
    'CustomDataset': ('stanford_dogs', 'cls'),
}

# format -> writer call (mini sizes: 4 training images (2 iterations x batch 2, or 1 per
# process and batch in 2-process runs), 2 validation images: one validation batch)
WRITERS: Dict[str, Callable[[str], Dict]] = {
    'coco': lambda root: testing.write_coco(
        root, num_images=4, image_size=(128, 96), num_classes=3, num_val_images=2),
    'cityscapes': lambda root: testing.write_cityscapes(
        root, num_images=4, image_size=(128, 64), num_val_images=2),
    'voc12aug': lambda root: testing.write_voc12aug(
        root, num_images=4, image_size=(96, 72), num_val_images=2, num_aug_images=2),
    'cifar10': lambda root: testing.write_cifar10(root, num_images=5, num_val_images=2),
    'cifar100': lambda root: testing.write_cifar100(root, num_images=5, num_val_images=2),
    'imagenet': lambda root: testing.write_imagenet(
        root, num_images=4, image_size=(80, 64), num_classes=4, num_val_images=2),
    'stanford_dogs': lambda root: testing.write_stanford_dogs(
        root, num_images=4, image_size=(80, 64), num_classes=2, num_val_images=2),
}

# default --max-size per task
DEFAULT_MAX_SIZE = {'det': 128, 'seg': 64, 'cls': 64}

# evaluator type -> key (suffix) of its headline metric
METRIC_KEYS = {
    'Accuracy': 'accuracy/top1',
    'CocoMetric': 'coco/bbox_mAP',
    'IoUMetric': 'mIoU',
}

DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
SIZE_KEYS = ('scale', 'img_scale', 'scales', 'crop_size', 'size')
CROP_KEYS = ('crop_size', )
WRAPPER_KEYS = ('dataset', 'datasets')


class UnsupportedDatasetError(Exception):
    """A dataset type of the config has no mini-dataset writer."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a config for a few iterations on a synthetic mini dataset, '
        'then validate with its metric')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', required=True, help='directory for logs and the data')
    parser.add_argument('--iters', type=int, default=2, help='training iterations (>= 1)')
    parser.add_argument(
        '--max-size',
        type=int,
        default=None,
        help='largest crop (else resize) side after shrinking the pipelines; default 128 '
        'for detection, 64 for segmentation and classification')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch'], default='none', help='job launcher')
    parser.add_argument(
        '--keep-data', action='store_true', help='keep the mini dataset after the run')
    parser.add_argument(
        '--save-checkpoint', action='store_true', help='save a checkpoint after training')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config (key=value), applied before the dry-run changes')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    if args.max_size is not None and args.max_size < 16:
        parser.error(f'--max-size must be >= 16, got {args.max_size}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


# ----------------------------------------------------------------------------- config walking
def _type_name(cfg: Any) -> Optional[str]:
    t = cfg.get('type') if isinstance(cfg, dict) else None
    if t is None:
        return None
    name = t if isinstance(t, str) else getattr(t, '__name__', str(t))
    return name.split('.')[-1]


def iter_leaf_datasets(dataset: Any) -> Iterator[dict]:
    """Yields the (mutable) config dicts of the real datasets inside dataset
    wrappers (``ConcatDataset``, ``RepeatDataset``, ``ClassBalancedDataset``,
    mmdet's ``MultiImageMixDataset``, ...)."""
    if not isinstance(dataset, dict):
        return
    inner = dataset.get('datasets')
    if isinstance(inner, (list, tuple)):
        for d in inner:
            yield from iter_leaf_datasets(d)
    elif isinstance(dataset.get('dataset'), dict):
        yield from iter_leaf_datasets(dataset['dataset'])
    else:
        yield dataset


def iter_dataset_nodes(dataset: Any) -> Iterator[dict]:
    """Yields every dataset dict (wrappers and leaves)."""
    if not isinstance(dataset, dict):
        return
    yield dataset
    for key in WRAPPER_KEYS:
        inner = dataset.get(key)
        if isinstance(inner, dict):
            yield from iter_dataset_nodes(inner)
        elif isinstance(inner, (list, tuple)):
            for d in inner:
                yield from iter_dataset_nodes(d)


def iter_transforms(obj: Any) -> Iterator[dict]:
    """Yields every transform dict in a pipeline, including nested ones
    (``TestTimeAug``, ``RandomChoice``, ``RandomApply``, ...)."""
    if isinstance(obj, dict):
        if 'type' in obj:
            yield obj
        for value in obj.values():
            if isinstance(value, (list, tuple, dict)):
                yield from iter_transforms(value)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from iter_transforms(item)


def walk_dicts(obj: Any, fn: Callable[[dict], None]) -> None:
    """Calls ``fn`` on every dict nested in ``obj`` (parents first)."""
    if isinstance(obj, dict):
        fn(obj)
        for value in list(obj.values()):
            walk_dicts(value, fn)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            walk_dicts(item, fn)


def detect_formats(cfg: Config) -> Dict[str, List[Tuple[str, dict]]]:
    """Maps each dataloader to ``[(format, leaf dataset cfg), ...]``.

    Raises:
        UnsupportedDatasetError: a leaf dataset type has no writer.
    """
    found: Dict[str, List[Tuple[str, dict]]] = {}
    unsupported = []
    for key in DATALOADERS:
        loader = cfg.get(key)
        if not loader:
            continue
        leaves = []
        for leaf in iter_leaf_datasets(loader.get('dataset')):
            name = _type_name(leaf)
            if name not in DATASET_FORMATS:
                unsupported.append(f'{key}: {name}')
                continue
            leaves.append((DATASET_FORMATS[name][0], leaf))
        found[key] = leaves
    if unsupported:
        raise UnsupportedDatasetError(
            'dry_run has no mini-dataset writer for ' + ', '.join(unsupported) +
            '. Supported dataset types: ' + ', '.join(sorted(DATASET_FORMATS)) + '.')
    if not found.get('train_dataloader'):
        raise UnsupportedDatasetError('the config has no train_dataloader with a dataset')
    return found


def task_of(formats: Dict[str, List[Tuple[str, dict]]]) -> str:
    by_format = {fmt: task for fmt, task in DATASET_FORMATS.values()}
    tasks = {by_format[fmt] for leaves in formats.values() for fmt, _ in leaves}
    for task in ('det', 'seg', 'cls'):
        if task in tasks:
            return task
    return 'cls'


# ----------------------------------------------------------------------------- data pointing
def _relative_paths(leaf: dict) -> List[str]:
    paths = []
    ann_file = leaf.get('ann_file')
    if isinstance(ann_file, str) and ann_file:
        paths.append(ann_file)
    prefix = leaf.get('data_prefix')
    if isinstance(prefix, str) and prefix:
        paths.append(prefix)
    elif isinstance(prefix, dict):
        paths.extend(v for v in prefix.values() if isinstance(v, str) and v)
    return paths


def point_leaf(leaf: dict, fmt: str, info: Dict, role: str) -> None:
    """Points one dataset config at the written mini dataset. The config's own
    relative paths (``ann_file``, ``data_prefix``, ``split``) are kept when
    they exist in the standard layout the writers produce (they usually do),
    else replaced by the writer's arguments for ``role`` (train / val)."""
    root = info['data_root']
    leaf['data_root'] = root
    if fmt in ('cifar10', 'cifar100'):
        leaf['download'] = False
        if leaf.get('split') not in ('train', 'test'):
            leaf.update(info['splits'][role])
        return
    paths = _relative_paths(leaf)
    if not paths and fmt == 'imagenet' and leaf.get('split') in ('train', 'val'):
        return
    if paths and all(osp.exists(p if osp.isabs(p) else osp.join(root, p)) for p in paths):
        return
    leaf.pop('ann_file', None)
    leaf.pop('data_prefix', None)
    leaf.update(copy.deepcopy(info['splits'][role]))


def point_evaluators(cfg: Config, formats: Dict[str, List[Tuple[str, dict]]]) -> None:
    """``CocoMetric.ann_file`` -> the json of the dataset it evaluates."""
    for ev_key, dl_key in (('val_evaluator', 'val_dataloader'),
                           ('test_evaluator', 'test_dataloader')):
        evaluator = cfg.get(ev_key)
        leaves = formats.get(dl_key) or []
        coco = [leaf for fmt, leaf in leaves if fmt == 'coco']
        if not evaluator or not coco:
            continue
        ann = osp.join(coco[0]['data_root'], coco[0]['ann_file'])
        for metric in (evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]):
            if _type_name(metric) == 'CocoMetric':
                metric['ann_file'] = ann
                metric['format_only'] = False
                metric.pop('outfile_prefix', None)


# ----------------------------------------------------------------------------- shrinking
def _sizes_of(value: Any) -> List[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _sizes_of(item)]
    return []


def _scaled(value: Any, factor: float) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return max(8, int(round(value * factor)))
    if isinstance(value, (list, tuple)):
        # only all-int sequences (and sequences of them) are sizes
        if all(isinstance(v, (int, list, tuple)) and not isinstance(v, bool) for v in value):
            return type(value)(_scaled(v, factor) for v in value)
    return value


def all_pipelines(cfg: Config) -> List[Any]:
    pipelines = []
    for key in DATALOADERS:
        loader = cfg.get(key)
        if loader:
            for node in iter_dataset_nodes(loader.get('dataset')):
                if node.get('pipeline'):
                    pipelines.append(node['pipeline'])
    return pipelines


def shrink_factor(cfg: Config, max_size: int) -> float:
    crops, scales = [], []
    for pipeline in all_pipelines(cfg):
        for t in iter_transforms(pipeline):
            for key in SIZE_KEYS:
                if key in t:
                    (crops if key in CROP_KEYS else scales).extend(_sizes_of(t[key]))
    preprocessor = cfg.model.get('data_preprocessor') or {}
    crops.extend(_sizes_of(preprocessor.get('size')))
    reference = max(crops) if crops else (max(scales) if scales else 0)
    return min(1.0, max_size / reference) if reference else 1.0


def shrink_sizes(cfg: Config, factor: float) -> None:
    if factor >= 1.0:
        return
    for pipeline in all_pipelines(cfg):
        for t in iter_transforms(pipeline):
            for key in SIZE_KEYS:
                if key in t:
                    t[key] = _scaled(t[key], factor)
    preprocessor = cfg.model.get('data_preprocessor')
    if isinstance(preprocessor, dict):
        if preprocessor.get('size') is not None:
            preprocessor['size'] = _scaled(preprocessor['size'], factor)
        for t in iter_transforms(preprocessor.get('batch_augments') or []):
            for key in ('size', 'random_size_range'):
                if key in t:
                    t[key] = _scaled(t[key], factor)
    test_cfg = cfg.model.get('test_cfg')
    if isinstance(test_cfg, dict) and test_cfg.get('mode') == 'slide':
        for key in ('crop_size', 'stride'):
            if key in test_cfg:
                test_cfg[key] = _scaled(test_cfg[key], factor)


# ----------------------------------------------------------------------------- runtime
def _drop_pretrained(node: dict) -> None:
    init_cfg = node.get('init_cfg')
    if isinstance(init_cfg, dict) and _type_name(init_cfg) == 'Pretrained':
        node['init_cfg'] = None
    elif isinstance(init_cfg, (list, tuple)):
        node['init_cfg'] = [c for c in init_cfg if _type_name(c) != 'Pretrained']
    if isinstance(node.get('pretrained'), str):
        node['pretrained'] = None


# caps of the detector's sampling / proposal counts (cost knobs, not code paths)
DETECTION_CAPS = {'nms_pre': 200, 'max_per_img': 100, 'num': 64}


def _no_score_threshold(node: dict) -> None:
    if 'score_thr' in node and isinstance(node['score_thr'], (int, float)):
        node['score_thr'] = 0.0


def _cap_detection_counts(node: dict) -> None:
    for key, cap in DETECTION_CAPS.items():
        value = node.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            node[key] = cap


def _sync_bn_to_bn(node: dict) -> None:
    if _type_name(node) in ('SyncBN', 'MMSyncBN', 'NaiveSyncBN'):
        node['type'] = 'BN'


def adapt_runtime(cfg: Config, args, distributed: bool, task: str) -> None:
    cuda = torch.cuda.is_available()
    for key in DATALOADERS:
        loader = cfg.get(key)
        if not loader:
            continue
        loader['batch_size'] = 2
        loader['num_workers'] = 0
        loader['persistent_workers'] = False
        loader['pin_memory'] = False
        loader.pop('prefetch_factor', None)

    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters, val_interval=args.iters)
    if cfg.get('val_dataloader') and not cfg.get('val_cfg'):
        cfg.val_cfg = dict(type='ValLoop')
    cfg.load_from = None
    cfg.resume = False
    cfg.randomness = dict(seed=0)

    hooks = cfg.get('default_hooks') or ConfigDict()
    logger = hooks.get('logger') or dict(type='LoggerHook')
    logger.update(interval=1, log_metric_by_epoch=False)
    hooks['logger'] = logger
    if args.save_checkpoint:
        hooks['checkpoint'] = dict(type='CheckpointHook', by_epoch=False, interval=args.iters)
    else:
        hooks['checkpoint'] = dict(
            type='CheckpointHook', by_epoch=False, interval=-1, save_last=False)
    cfg.default_hooks = hooks
    log_processor = cfg.get('log_processor') or ConfigDict()
    log_processor.update(by_epoch=False, window_size=1)
    cfg.log_processor = log_processor

    walk_dicts(cfg.model, _drop_pretrained)
    if isinstance(cfg.model.get('test_cfg'), dict):
        walk_dicts(cfg.model['test_cfg'], _no_score_threshold)
    for key in ('train_cfg', 'test_cfg'):
        if task == 'det' and isinstance(cfg.model.get(key), dict):
            walk_dicts(cfg.model[key], _cap_detection_counts)
    if not (distributed and cuda):
        walk_dicts(cfg.model, _sync_bn_to_bn)
    if cfg.get('sync_bn') and not cuda:
        cfg.sync_bn = None

    env_cfg = cfg.get('env_cfg') or ConfigDict()
    env_cfg['cudnn_benchmark'] = False
    if not cuda:
        dist_cfg = env_cfg.get('dist_cfg') or ConfigDict()
        dist_cfg['backend'] = 'gloo'
        env_cfg['dist_cfg'] = dist_cfg
        optim = cfg.get('optim_wrapper')
        if isinstance(optim, dict) and _type_name(optim) == 'AmpOptimWrapper':
            optim['type'] = 'OptimWrapper'
            for key in ('loss_scale', 'dtype', 'use_fsdp'):
                optim.pop(key, None)
        if distributed:
            wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
                type='MMDistributedDataParallel',
                broadcast_buffers=False,
                find_unused_parameters=cfg.get('find_unused_parameters', False))
            wrapper['device_ids'] = None  # CPU modules take no device_ids
            cfg.model_wrapper_cfg = wrapper
    cfg.env_cfg = env_cfg
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir


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
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, 'tolist'):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def headline_metric(cfg: Config, metrics: Dict[str, Any]) -> Tuple[Optional[str], Any]:
    evaluator = cfg.get('val_evaluator')
    evaluators = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    for ev in evaluators:
        suffix = METRIC_KEYS.get(_type_name(ev) or '')
        if suffix is None:
            continue
        for key, value in metrics.items():
            if key == suffix or key.endswith('/' + suffix) or key.endswith(suffix):
                return key, value
        return suffix, None
    return None, None


def init_distributed(cfg: Config) -> None:
    """Initialises the process group before the Runner does: mmengine's
    pytorch launcher calls ``torch.cuda.set_device``, which fails without a
    GPU, so CPU runs use ``gloo`` here (the Runner then skips its own init)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        backend = ((cfg.get('env_cfg') or {}).get('dist_cfg') or {}).get('backend', 'nccl')
    else:
        backend = 'gloo'
    torch_dist.init_process_group(backend=backend)


def _rank() -> int:
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank()
    return 0


def _barrier() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def prepare(cfg: Config, args, distributed: bool) -> Tuple[Dict, str]:
    """Writes the mini datasets (rank 0) and rewrites ``cfg`` in place.

    Returns:
        tuple: the detected formats and the data directory.
    """
    formats = detect_formats(cfg)
    task = task_of(formats)
    data_dir = osp.abspath(osp.join(args.work_dir, DATA_DIR))
    needed = sorted({fmt for leaves in formats.values() for fmt, _ in leaves})
    infos: Dict[str, Dict] = {}
    if _rank() == 0:
        if osp.isdir(data_dir):
            shutil.rmtree(data_dir)
        for fmt in needed:
            infos[fmt] = WRITERS[fmt](osp.join(data_dir, fmt))
    if torch_dist.is_available() and torch_dist.is_initialized():
        shared = [infos]
        torch_dist.broadcast_object_list(shared, src=0)  # also waits for rank 0's files
        infos = shared[0]
    for key, leaves in formats.items():
        role = 'train' if key == 'train_dataloader' else 'val'
        for fmt, leaf in leaves:
            point_leaf(leaf, fmt, infos[fmt], role)
    point_evaluators(cfg, formats)
    max_size = args.max_size or DEFAULT_MAX_SIZE[task]
    shrink_sizes(cfg, shrink_factor(cfg, max_size))
    adapt_runtime(cfg, args, distributed, task)
    return formats, data_dir


def run(args) -> int:
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        detect_formats(cfg)
    except UnsupportedDatasetError as e:
        print(f'dry_run: error: {e}', file=sys.stderr)
        return EXIT_UNSUPPORTED
    distributed = args.launcher != 'none'
    if distributed:
        init_distributed(cfg)
    formats, data_dir = prepare(cfg, args, distributed)

    recorder = _DryRunRecorder()
    with ExitStack() as stack:
        if any(fmt in ('cifar10', 'cifar100') for leaves in formats.values()
               for fmt, _ in leaves):
            stack.enter_context(testing.cifar_integrity_check_disabled())
        runner = Runner.from_cfg(cfg)
        runner.register_hook(recorder, priority='VERY_LOW')
        runner.train()

    metrics = recorder.metrics or {}
    key, value = headline_metric(cfg, metrics)
    status = 0
    if _rank() == 0:
        result = dict(
            config=args.config,
            iters=args.iters,
            metric_key=key,
            metric=_jsonable(value),
            metrics={k: _jsonable(v) for k, v in metrics.items()},
            loss_keys=recorder.loss_keys,
            world_size=torch_dist.get_world_size() if distributed else 1)
        with open(osp.join(args.work_dir, RESULT_FILE), 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=2)
        print(f'dry-run losses: {", ".join(recorder.loss_keys)}')
        if key is None or key not in metrics:
            print(f'dry_run: error: the validation returned no {key or "headline"} metric '
                  f'(got {sorted(metrics)})', file=sys.stderr)
            status = 1
        else:
            print(f'dry-run metric: {key} = {_jsonable(value)}')
    _barrier()
    if _rank() == 0 and not args.keep_data:
        shutil.rmtree(data_dir, ignore_errors=True)
    if distributed and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
    return status


def main(argv=None) -> int:
    args = parse_args(argv)
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
