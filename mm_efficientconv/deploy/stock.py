# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Building, probing and comparing models of OpenMMLab configs, and the
stock-config check.

This module imports nothing from ``mm_efficientconv`` and no codebase at
import time: :func:`run_stock_check` loads it by file path in a clean
interpreter, where the stock config (one that does not use the plugin) is
built, the folded checkpoint loaded strictly and its outputs compared — which
proves that the folded checkpoint needs nothing from this package.
"""
import json
import os.path as osp
import subprocess
import sys
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

DEFAULT_DETECTION_SHAPE = (256, 256)
DEFAULT_CLASSIFIER_SIZE = 224


def build_model(config, cfg_options: Optional[dict] = None) -> Tuple[nn.Module, object]:
    """Builds the model of ``config`` in the config's default scope, in eval
    mode on the CPU.

    Args:
        config (str | mmengine.Config): A config path, a config shipped with a
            codebase (``'mmdet::faster_rcnn/xxx.py'``) or a ``Config``.
        cfg_options (dict, optional): Overrides merged into the config.
            Defaults to None.

    Returns:
        tuple[nn.Module, mmengine.Config]: The model and the config.
    """
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    if isinstance(config, Config):
        cfg = config
    elif '::' in config and not osp.exists(config):
        from mmengine.hub import get_config
        cfg = get_config(config)
    else:
        cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', None) or 'mmengine')
    model_cfg = cfg.model.copy()
    if 'data_preprocessor' not in model_cfg and cfg.get('data_preprocessor', None) is not None:
        model_cfg['data_preprocessor'] = cfg.data_preprocessor  # mmpretrain/mmseg style
    model = MODELS.build(model_cfg)
    return model.eval(), cfg


def is_classifier(model: nn.Module) -> bool:
    """Whether ``model`` is an mmpretrain classifier (checked by class name,
    so that mmpretrain need not be imported)."""
    return any(c.__name__ == 'BaseClassifier' and c.__module__.startswith('mmpretrain')
               for c in type(model).__mro__)


def exports_features(model: nn.Module) -> bool:
    """Whether the deployed function of ``model`` is ``extract_feat`` (detectors,
    segmentors: heads with data-dependent post-processing are left out) rather
    than ``forward(x, mode='tensor')`` (classifiers: the logits)."""
    return not is_classifier(model) and callable(getattr(model, 'extract_feat', None))


def flatten_outputs(out) -> List[torch.Tensor]:
    """The tensors of a (nested) tensor / tuple / list / dict output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for key in out for t in flatten_outputs(out[key])]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in flatten_outputs(item)]
    return []


def deployed_outputs(model: nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    """The tensors of the deployed function of ``model`` (see
    :func:`exports_features`) for the input batch ``x``."""
    out = model.extract_feat(x) if exports_features(model) else model(x, mode='tensor')
    return flatten_outputs(out)


@torch.no_grad()
def probe_forward(model: nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    """:func:`deployed_outputs` without autograd, as float32 CPU tensors; ``x``
    is moved to the device of ``model``."""
    device = next((t.device for t in model.parameters()), torch.device('cpu'))
    return [t.float().cpu() for t in deployed_outputs(model, x.to(device))]


def max_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """The largest absolute difference between two lists of tensors (compared
    in float32 on the CPU).

    Raises:
        RuntimeError: The lists differ in length or shapes.
    """
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise RuntimeError(f'output structures differ: {[tuple(t.shape) for t in a]} vs '
                           f'{[tuple(t.shape) for t in b]}')
    return max(((x.detach().float().cpu() - y.detach().float().cpu()).abs().max().item()
                for x, y in zip(a, b)), default=0.0)


def num_params(model: nn.Module) -> int:
    """Number of parameter elements of ``model``."""
    return sum(p.numel() for p in model.parameters())


def _walk_transforms(node) -> Iterator[dict]:
    if isinstance(node, dict):
        if 'type' in node and isinstance(node.get('type'), str):
            yield node
        for value in node.values():
            yield from _walk_transforms(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _walk_transforms(value)


def _as_hw(value) -> Optional[Tuple[int, int]]:
    if isinstance(value, int) and value > 0:
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and v > 0 for v in value):
        return int(value[1]), int(value[0])  # OpenMMLab scales are (w, h)
    return None


def probe_shape(cfg, model: nn.Module, batch: int = 2,
                shape: Optional[Sequence[int]] = None) -> Tuple[int, int, int, int]:
    """``(N, C, H, W)`` of a probe batch.

    Args:
        cfg (mmengine.Config): The config of ``model``.
        model (nn.Module): The model (C is the length of its data
            preprocessor's mean; 3 without one).
        batch (int): N. Defaults to 2.
        shape (Sequence[int], optional): ``(H, W)``. Defaults to None: for
            classifiers the last crop/resize size the test, val, then train
            pipeline sets (224 if none), for detectors/segmentors 256 x 256.
    """
    mean = getattr(getattr(model, 'data_preprocessor', None), 'mean', None)
    channels = int(mean.numel()) if isinstance(mean, torch.Tensor) and mean.numel() > 0 else 3
    if shape is not None:
        return batch, channels, int(shape[0]), int(shape[1])
    if not is_classifier(model):
        return (batch, channels) + DEFAULT_DETECTION_SHAPE
    for section in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
        found = None  # the last size a pipeline sets is what the model sees (resize, then crop)
        for transform in _walk_transforms(cfg.get(section, None)):
            for key in ('crop_size', 'scale', 'size'):
                hw = _as_hw(transform.get(key))
                if hw is not None:
                    found = hw
                    break
        if found is not None:
            return (batch, channels) + found
    return batch, channels, DEFAULT_CLASSIFIER_SIZE, DEFAULT_CLASSIFIER_SIZE


def stock_check(config: str, checkpoint: str, probe_file: str) -> dict:
    """Builds the stock ``config``, loads ``checkpoint`` strictly and compares
    its probe outputs with those stored in ``probe_file``.

    Meant to run in a clean interpreter (:func:`run_stock_check`).

    Args:
        config (str): The stock config (path or ``codebase::path``).
        checkpoint (str): A ``{'state_dict', ...}`` checkpoint.
        probe_file (str): ``torch.save``d ``{'input', 'outputs'}``.

    Returns:
        dict: ``missing`` / ``unexpected`` keys, ``max_abs_diff`` (only when
        the keys match) and ``imported_mm_efficientconv``.
    """
    from mmengine.runner import load_checkpoint
    model, _ = build_model(config)
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    expected = set(model.state_dict().keys())
    got = set(state.keys())
    result = dict(missing=sorted(expected - got), unexpected=sorted(got - expected))
    if not result['missing'] and not result['unexpected']:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
        probe = torch.load(probe_file, map_location='cpu', weights_only=True)
        result['max_abs_diff'] = max_abs_diff(probe_forward(model, probe['input']),
                                              probe['outputs'])
    result['imported_mm_efficientconv'] = any(
        name == 'mm_efficientconv' or name.startswith('mm_efficientconv.') for name in sys.modules)
    return result


_STOCK_SCRIPT = """
import importlib.util, json
spec = importlib.util.spec_from_file_location('_mmeff_stock_check', {module!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
result = module.stock_check({config!r}, {checkpoint!r}, {probe!r})
print('STOCK_CHECK ' + json.dumps(result))
"""


def run_stock_check(config: str, checkpoint: str, probe_file: str) -> dict:
    """Runs :func:`stock_check` in a new interpreter that loads only this file
    (never ``mm_efficientconv``) and returns its result.

    Raises:
        RuntimeError: The subprocess failed (its output tail is included).
    """
    script = _STOCK_SCRIPT.format(module=osp.abspath(__file__), config=config,
                                  checkpoint=osp.abspath(checkpoint), probe=osp.abspath(probe_file))
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith('STOCK_CHECK '):
            return json.loads(line[len('STOCK_CHECK '):])
    raise RuntimeError(f'the stock-config check failed (exit code {proc.returncode}):\n'
                       f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
