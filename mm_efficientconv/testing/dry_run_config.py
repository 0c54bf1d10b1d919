# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Config surgery of the dry run (:mod:`.dry_run`): find the dataset types of
a config, point its datasets and evaluators at mini datasets, shrink its
image sizes and make its schedule a few iterations.

What is changed, and nothing else:

* data: ``data_root`` (and, where the config's relative paths do not exist in
  the standard layout, ``ann_file``/``data_prefix``); ``download=False``;
* pipelines: every size (``scale``, ``crop_size``, ``size``, ...) scaled by one
  factor so the largest crop (else the largest resize target) is at most
  ``max_size`` pixels; transform types are kept; the data preprocessor's
  ``size`` and a slide-inference ``crop_size``/``stride`` follow;
* run time: see :func:`adapt_runtime`.
"""
import copy
import os.path as osp
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from mmengine.config import Config, ConfigDict

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

# default max_size per task
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
    """``'det'``, ``'seg'`` or ``'cls'``: the first of these any format belongs to."""
    by_format = {fmt: task for fmt, task in DATASET_FORMATS.values()}
    tasks = {by_format[fmt] for leaves in formats.values() for fmt, _ in leaves}
    for task in ('det', 'seg', 'cls'):
        if task in tasks:
            return task
    return 'cls'


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
    """Points ``CocoMetric.ann_file`` at the json of the dataset it evaluates."""
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
    """The pipelines of every dataset node of every dataloader."""
    pipelines = []
    for key in DATALOADERS:
        loader = cfg.get(key)
        if loader:
            for node in iter_dataset_nodes(loader.get('dataset')):
                if node.get('pipeline'):
                    pipelines.append(node['pipeline'])
    return pipelines


def shrink_factor(cfg: Config, max_size: int) -> float:
    """The factor that brings the largest crop (else resize) size of the
    pipelines and the data preprocessor down to ``max_size`` (at most 1)."""
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
    """Scales every size of the pipelines, the data preprocessor and slide
    inference by ``factor``, in place."""
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


def adapt_runtime(cfg: Config,
                  work_dir: str,
                  iters: int = 2,
                  launcher: str = 'none',
                  save_checkpoint: bool = False,
                  task: str = 'cls') -> None:
    """The run-time part of the dry-run surgery, in place: batch size 2 and no
    workers, ``iters`` iterations with one validation at the end, logging
    every iteration, checkpoints off (one at the end with
    ``save_checkpoint``), nothing loaded or downloaded, detection score
    threshold 0 and capped sample counts (``task='det'``); where no GPU is
    available SyncBN -> BN, ``AmpOptimWrapper`` -> ``OptimWrapper`` and the
    ``gloo`` backend (SyncBN also becomes BN in non-distributed runs).

    Args:
        cfg (mmengine.Config): The config, modified in place.
        work_dir (str): The run's work directory.
        iters (int): Training iterations. Defaults to 2.
        launcher (str): ``'none'`` or a distributed launcher. Defaults to
            ``'none'``.
        save_checkpoint (bool): Save a checkpoint after training. Defaults
            to False.
        task (str): ``'cls'``, ``'det'`` or ``'seg'``. Defaults to ``'cls'``.
    """
    cuda = torch.cuda.is_available()
    distributed = launcher != 'none'
    for key in DATALOADERS:
        loader = cfg.get(key)
        if not loader:
            continue
        loader['batch_size'] = 2
        loader['num_workers'] = 0
        loader['persistent_workers'] = False
        loader['pin_memory'] = False
        loader.pop('prefetch_factor', None)

    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    if cfg.get('val_dataloader') and not cfg.get('val_cfg'):
        cfg.val_cfg = dict(type='ValLoop')
    cfg.load_from = None
    cfg.resume = False
    cfg.randomness = dict(seed=0)

    hooks = cfg.get('default_hooks') or ConfigDict()
    logger = hooks.get('logger') or dict(type='LoggerHook')
    logger.update(interval=1, log_metric_by_epoch=False)
    hooks['logger'] = logger
    if save_checkpoint:
        hooks['checkpoint'] = dict(type='CheckpointHook', by_epoch=False, interval=iters)
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
    cfg.env_cfg = env_cfg
    cfg.launcher = launcher
    cfg.work_dir = work_dir


def headline_metric(cfg: Config, metrics: Dict[str, Any]) -> Tuple[Optional[str], Any]:
    """``(key, value)`` of the headline metric of the config's validation
    evaluator in ``metrics``; ``(expected key, None)`` when it is missing,
    ``(None, None)`` for an evaluator without a known headline."""
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
