# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""A hook that adds the BSConv-S orthonormal regulariser to the training loss."""
from numbers import Real
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from mm_efficientconv.layers.utils import autocast_disabled

LOSS_KEY = 'loss_ortho'
#: The name a head's bare ``'loss'`` key is given while the hook is active.
RENAMED_HEAD_LOSS = 'loss_cls'


def regularised_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` of every module of ``model`` that carries a
    regulariser: it has a callable ``reg_loss()`` and is not in plain mode
    (an ``EfficientConv2d`` at a call site its transform does not apply to,
    e.g. a 1x1 ``BSConvS``, has ``plain=True`` and no projection to
    regularise)."""
    return [(name, m) for name, m in model.named_modules()
            if callable(getattr(m, 'reg_loss', None)) and not getattr(m, 'plain', False)]


def compute_reg_loss(modules: List[nn.Module], reduction: str = 'sum') -> torch.Tensor:
    """Reduces ``reg_loss()`` of ``modules`` to one fp32 scalar, computed with
    autocast disabled.

    Args:
        modules (list[nn.Module]): Modules with a ``reg_loss()`` method.
        reduction (str): ``'sum'`` or ``'mean'`` over the modules.
            Defaults to 'sum'.

    Returns:
        torch.Tensor: A differentiable fp32 scalar.
    """
    if not modules:
        raise ValueError('compute_reg_loss needs at least one module with reg_loss()')
    values = []
    for module in modules:
        param = next(module.parameters(), None)
        device_type = param.device.type if param is not None else 'cpu'
        with autocast_disabled(device_type):
            value = module.reg_loss()
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise TypeError(f'{type(module).__name__}.reg_loss() must return a scalar tensor, '
                            f'got {type(value).__name__}'
                            + (f' of shape {tuple(value.shape)}'
                               if isinstance(value, torch.Tensor) else ''))
        values.append(value.reshape(()).float())
    device = values[0].device
    total = torch.stack([v.to(device) for v in values]).sum()
    return total / len(values) if reduction == 'mean' else total


class _RegularisedParseLosses:
    """The ``parse_losses`` that :class:`OrthoRegHook` installs on a model
    instance. A callable object (not a closure) so that ``copy.deepcopy`` of
    the model re-targets it to the copy."""

    def __init__(self, model: nn.Module, original: Callable, modules: List[nn.Module],
                 alpha: float, reduction: str, head_loss_key: str) -> None:
        self.model = model
        self.original = original
        self.modules = modules
        self.alpha = alpha
        self.reduction = reduction
        self.head_loss_key = head_loss_key

    def __call__(self, losses: Dict[str, torch.Tensor]):
        if not self.model.training:
            return self.original(losses)
        losses = dict(losses)
        if 'loss' in losses:
            if self.head_loss_key in losses:
                raise KeyError(f"OrthoRegHook: the model's losses contain both 'loss' and "
                               f"'{self.head_loss_key}'; cannot rename 'loss'")
            losses = {(self.head_loss_key if k == 'loss' else k): v for k, v in losses.items()}
        if LOSS_KEY in losses:
            raise KeyError(f"OrthoRegHook: the model's losses already contain '{LOSS_KEY}'")
        losses[LOSS_KEY] = self.alpha * compute_reg_loss(self.modules, self.reduction)
        return self.original(losses)


@HOOKS.register_module()
class OrthoRegHook(Hook):
    """Adds ``alpha * reduce(reg_loss())`` over all regularised modules to the
    training loss, logged as ``loss_ortho``.

    BSConv-S (Haase & Amthor, CVPR 2020) pushes the rows of each layer's
    ``M' x M`` projection ``W_B`` towards orthonormality with
    ``L_ortho = ||W_B W_B^T - I||_F``, summed over all BSConv-S layers and
    scaled by ``alpha`` (0.1 on ImageNet and fine-grained data, 0.01 on CIFAR).
    The hook is layer-agnostic: every module of the model with a callable
    ``reg_loss()`` (and not in plain mode) contributes, so other regularised
    layers plug in through the same protocol.

    Mechanism: at ``before_train`` the hook replaces ``parse_losses`` on the
    *instance* of the unwrapped model (``runner.model.module`` under
    ``MMDistributedDataParallel``) by a wrapper that, in training mode only,

    * renames a bare ``'loss'`` key (mmpretrain's heads return one) to
      ``'loss_cls'``, because ``BaseModel.parse_losses`` inserts the total
      under ``'loss'`` and a head key of the same name would overwrite it in
      the log (the log would show the head loss while the total is
      back-propagated);
    * adds ``loss_ortho = alpha * reduce(reg_loss())``, computed in fp32 with
      autocast disabled, before calling the original ``parse_losses``, which
      sums every key containing ``'loss'`` into the total that is
      back-propagated and logged as ``loss``.

    ``after_train`` restores the original method. Why ``parse_losses``:
    mmengine's ``BaseModel.train_step`` and ``MMDistributedDataParallel``'s
    ``train_step`` both call ``module.parse_losses`` (the DDP wrapper calls
    ``module.forward`` and ``module.parse_losses`` directly and never
    ``module.train_step``, so overriding ``train_step`` or ``loss`` of the
    model would be bypassed or would need a model subclass per codebase); it
    runs after the forward, outside the autocast region of
    ``AmpOptimWrapper``; and its outputs reach the log through the message
    hub. A model wrapper would have to replace mmengine's DDP/FSDP wrappers,
    and a custom ``OptimWrapper`` receives only the total (it cannot log the
    term) and is replaced by ``tools/train.py --amp``. Evaluation losses are
    untouched (the wrapper is a no-op when the model is not in training
    mode).

    Args:
        alpha (float): Weight of the penalty; must be >= 0. Defaults to 0.1
            (the paper's ImageNet value; its CIFAR configs use 0.01).
        reduction (str): How the per-layer penalties are reduced: ``'sum'``
            (as in the paper's reference code) or ``'mean'`` over the
            regularised layers. Defaults to 'sum'.

    Raises:
        RuntimeError: At ``before_train`` if no module of the model has a
            ``reg_loss()``.

    Example:
        >>> custom_hooks = [dict(type='OrthoRegHook', alpha=0.01)]
    """

    priority = 'NORMAL'
    _reductions = ('sum', 'mean')

    def __init__(self, alpha: float = 0.1, reduction: str = 'sum') -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, Real) or not alpha >= 0 \
                or alpha == float('inf'):
            raise ValueError(f'OrthoRegHook: alpha must be a finite number >= 0, got {alpha!r}')
        if reduction not in self._reductions:
            raise ValueError(f'OrthoRegHook: reduction must be one of {self._reductions}, '
                             f'got {reduction!r}')
        self.alpha = float(alpha)
        self.reduction = reduction
        self._model: Optional[nn.Module] = None
        self._had_instance_attr = False
        self._previous = None

    @staticmethod
    def _unwrap(model: nn.Module) -> nn.Module:
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner) -> None:
        """Installs the regularised ``parse_losses`` on the unwrapped model."""
        model = self._unwrap(runner.model)
        current = model.__dict__.get('parse_losses')
        if isinstance(current, _RegularisedParseLosses):
            return  # already installed (e.g. train() called twice)
        named = regularised_modules(model)
        if not named:
            raise RuntimeError(
                f'OrthoRegHook: no module of the model ({type(model).__name__}) has a '
                'reg_loss() to regularise. The penalty is provided by BSConvS layers that are '
                "not in plain mode (conv_cfg=dict(type='BSConvS') on KxK regular convs, or the "
                'BSConvSMobileNetV2/BSConvSMobileNetV3 backbones); remove OrthoRegHook from '
                'custom_hooks for models without them.')
        self._model = model
        self._had_instance_attr = 'parse_losses' in model.__dict__
        self._previous = current
        model.parse_losses = _RegularisedParseLosses(
            model, model.parse_losses, [m for _, m in named], self.alpha, self.reduction,
            RENAMED_HEAD_LOSS)
        print_log(
            f'OrthoRegHook: {LOSS_KEY} = {self.alpha:g} * {self.reduction} of reg_loss() over '
            f'{len(named)} modules; a head loss named "loss" is logged as "{RENAMED_HEAD_LOSS}"',
            logger='current')

    def after_train(self, runner) -> None:
        """Restores the model's original ``parse_losses``."""
        model = self._model
        if model is None:
            return
        if self._had_instance_attr:
            model.parse_losses = self._previous
        else:
            model.__dict__.pop('parse_losses', None)
        self._model = None
        self._previous = None
