# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The one deploy protocol of the package, and CPU copies of models.

A module that can simplify itself for inference has ``switch_to_deploy()``.
It converts the module in place and may return the module its parent should
hold from now on (e.g. ``DOConv`` returns a plain ``nn.Conv2d`` holding the
folded kernel). Modules from other libraries that follow the same convention
(mmpretrain's RepVGG/MobileOne blocks, which return ``None``) are converted
too. The protocol is duck-typed: this module imports nothing from the layers.
"""
import copy
from typing import Tuple

import torch
import torch.nn as nn


def _convert(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        new_child = _convert(child)
        if new_child is not child:
            setattr(module, name, new_child)
    convert = getattr(module, 'switch_to_deploy', None)
    if callable(convert):
        replacement = convert()
        if isinstance(replacement, nn.Module):
            return replacement
    return module


def switch_to_deploy(model: nn.Module) -> nn.Module:
    """Converts every module of ``model`` that has ``switch_to_deploy()`` to its
    inference form, in place, children first.

    Outputs are unchanged (up to float rounding). Idempotent: a converted model
    is returned as it is. Works on any ``nn.Module`` (a backbone, an mmpretrain
    classifier, an mmdet detector, an mmseg segmentor) on any device; the
    training mode of every module is kept.

    Args:
        model (nn.Module): The model to convert.

    Returns:
        nn.Module: The converted model. It is ``model`` itself unless ``model``
        is a single layer that is replaced (e.g. a bare ``DOConv``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'model must be an nn.Module, got {type(model).__name__}')
    return _convert(model)


def count_deployable(model: nn.Module) -> int:
    """Number of modules in ``model`` that :func:`switch_to_deploy` would
    convert (modules with a ``switch_to_deploy`` method that are not yet in
    deploy form)."""
    return sum(1 for m in model.modules()
               if callable(getattr(m, 'switch_to_deploy', None)) and not getattr(m, 'deploy', False))


def fold_model(model: nn.Module, fuse_conv_bn: bool = False) -> Tuple[nn.Module, int]:
    """Converts ``model`` to its deploy form in place with
    :func:`switch_to_deploy`, then optionally fuses every conv with the BN that
    follows it (``mmcv.cnn.fuse_conv_bn``).

    Args:
        model (nn.Module): The model to fold.
        fuse_conv_bn (bool): Whether to fuse conv + BN afterwards (changes
            the state-dict keys: the BN entries disappear). Defaults to False.

    Returns:
        tuple[nn.Module, int]: The converted model and the number of modules
        :func:`switch_to_deploy` converted.
    """
    num = count_deployable(model)
    model = switch_to_deploy(model)
    if fuse_conv_bn:
        from mmcv.cnn import fuse_conv_bn as _fuse
        model = _fuse(model)
    return model, num


def cpu_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` on the CPU; ``model`` itself is not touched
    (same device, same parameter objects, same training mode).

    Parameters and buffers are copied straight to the CPU (a model on a GPU is
    never duplicated in GPU memory), then the copy's ``cpu()`` runs so that
    device bookkeeping (mmengine data preprocessors, cached tensors of layers
    that reset them on ``_apply``) follows.

    Args:
        model (nn.Module): The model to copy.

    Returns:
        nn.Module: The copy, in the training mode of ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'model must be an nn.Module, got {type(model).__name__}')
    memo = {}
    for param in model.parameters():
        memo[id(param)] = nn.Parameter(
            param.detach().to('cpu', copy=True), requires_grad=param.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = buffer.detach().to('cpu', copy=True)
    return copy.deepcopy(model, memo).cpu()

