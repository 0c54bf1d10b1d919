# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Checkpoint I/O of deploy checkpoints: ``{'state_dict', 'meta'}`` files that
load with ``torch.load(weights_only=True)`` anywhere, written atomically."""
import os
import os.path as osp

import torch
import torch.nn as nn

_PLAIN_TYPES = (str, int, float, bool, type(None))


def plain_meta(value):
    """A copy of ``value`` made only of str/int/float/bool/None, lists, tuples
    and str-keyed dicts (anything else becomes its ``str``), so that the
    checkpoint loads with ``torch.load(weights_only=True)`` anywhere, without
    this package."""
    if isinstance(value, _PLAIN_TYPES):
        return value
    if isinstance(value, dict):
        return {str(k): plain_meta(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_meta(v) for v in value)
    if hasattr(value, 'item') and getattr(value, 'ndim', None) == 0:  # numpy / torch scalar
        return plain_meta(value.item())
    return str(value)


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the target directory, then
    ``os.replace`` it onto ``path`` (readers never see a partial file, a
    failure leaves no file behind)."""
    path = osp.abspath(path)
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp.{os.getpid()}'
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def cpu_state_dict(model: nn.Module) -> dict:
    """The state dict of ``model`` (unwrapped from DDP-like wrappers), every
    tensor detached and on the CPU, with the version metadata
    (mmengine's ``get_state_dict`` + ``weights_to_cpu``)."""
    from mmengine.runner.checkpoint import get_state_dict, weights_to_cpu
    return weights_to_cpu(get_state_dict(model))


def deploy_checkpoint(model: nn.Module, meta: dict) -> dict:
    """``{'state_dict': cpu_state_dict(model), 'meta': plain_meta(meta)}``."""
    return {'state_dict': cpu_state_dict(model), 'meta': plain_meta(meta)}


def save_deploy_checkpoint(model: nn.Module, meta: dict, path: str) -> int:
    """Writes :func:`deploy_checkpoint` to ``path`` atomically; returns the
    number of state-dict entries."""
    checkpoint = deploy_checkpoint(model, meta)
    atomic_torch_save(checkpoint, path)
    return len(checkpoint['state_dict'])
