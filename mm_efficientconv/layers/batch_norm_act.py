# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Training-mode ``BatchNorm2d`` + activation as one fused CPU op.

Between the convolutions of a mobile network (MixNet's expand, depthwise and
project convs) the batch norm and the activation are memory-bound, and on a
CPU they take ~30% of a training step (profiled: 250 of 830 ms of a MixNet-S
step at batch 8, 224x224, 2 threads): stock PyTorch reads the tensor three
times and writes it twice in the forward, keeps the normalised tensor for the
activation's backward, and streams five more tensors in the backward. The
compiled op (``mm_efficientconv._ext``, ``csrc/batch_norm_act.cpp``) reads the
input twice and writes the output once, keeps only the input, and recomputes
the normalised value in the backward.

:func:`batch_norm_act` computes ``act(norm(x))`` for the *modules* a user
built (a stock ``nn.BatchNorm2d`` and ``nn.ReLU``, ``nn.SiLU`` or none), and
updates the running statistics and ``num_batches_tracked`` exactly as
``nn.BatchNorm2d.forward`` does. It calls the modules themselves whenever the
fused op would not behave like them: not training, another norm type (SyncBN,
GN, ...) or activation, ``affine=False``, hooks on either module (or global
module hooks), a dtype other than float32, a device other than the CPU, an
input that is neither NCHW- nor channels-last-contiguous, one value per
channel (stock raises), tracing, scripting, ONNX export or ``torch.compile``,
and when the op is not built or is switched off
(:func:`set_fused_batch_norm_act`, ``MMEFF_FUSED_BN_ACT=0``,
``MMEFF_WITH_OPS=0``). Values and gradients equal the modules' up to float32
rounding (the sums run in another order); the fused backward is not
differentiable again (double backward raises, as for any
``once_differentiable`` op) and forward-mode AD (``torch.func.jvp``) raises:
switch the op off for either (:func:`set_fused_batch_norm_act`).

:class:`FusedConvModule` is mmcv's ``ConvModule`` (same submodules, state dict
and options) whose forward uses :func:`batch_norm_act` for its norm and
activation.
"""
import os
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.registry import MODELS
from torch.autograd.function import once_differentiable

from .doconv_compose import _ext
from .utils import in_graph_transform

_ACT_CODES = {type(None): 0, nn.ReLU: 1, nn.SiLU: 2}

# On unless switched off: MMEFF_FUSED_BN_ACT=0, MMEFF_WITH_OPS=0 or set_fused_batch_norm_act(False).
_enabled = (os.environ.get('MMEFF_FUSED_BN_ACT', '1') != '0'
            and os.environ.get('MMEFF_WITH_OPS', '1') != '0')


def fused_batch_norm_act_available() -> bool:
    """Whether the compiled op is built, has the fused batch norm and is enabled."""
    return _enabled and _ext is not None and hasattr(_ext, 'batch_norm_act_forward')


def set_fused_batch_norm_act(enabled: bool) -> bool:
    """Enables or disables the fused op; returns the previous setting.
    Disabled, :func:`batch_norm_act` calls the modules."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


class _BatchNormAct(torch.autograd.Function):
    """``(z, mean, biased var) = act(batch_norm(x))`` with batch statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float, act: int):
        z, mean, var, invstd = _ext.batch_norm_act_forward(x, weight, bias, eps, act)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.act = act
        ctx.mark_non_differentiable(mean, var)
        return z, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_mean, _grad_var):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        channels_last = not x.is_contiguous()
        grad = grad.contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x, grad_w, grad_b = _ext.batch_norm_act_backward(grad, x, weight, bias, mean,
                                                              invstd, ctx.act, need_x)
        return (grad_x if need_x else None, grad_w if need_w else None,
                grad_b if need_b else None, None, None)


def _hooked(module: Optional[nn.Module]) -> bool:
    return module is not None and bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
        or getattr(module, '_backward_pre_hooks', None))


def _global_hooks() -> bool:
    m = nn.modules.module
    return any(
        getattr(m, name, None)
        for name in ('_global_forward_hooks', '_global_forward_pre_hooks',
                     '_global_backward_hooks', '_global_backward_pre_hooks'))


def _fused_act_code(x: torch.Tensor, norm: nn.Module, act: Optional[nn.Module]) -> Optional[int]:
    """The activation code of the fused op, or None where the modules must run."""
    code = _ACT_CODES.get(type(act))
    if (code is None or type(norm) is not nn.BatchNorm2d or not norm.training
            or not norm.affine or not fused_batch_norm_act_available() or in_graph_transform()):
        return None
    if (type(x) is not torch.Tensor or x.device.type != 'cpu' or x.dtype != torch.float32
            or x.dim() != 4 or x.numel() <= x.shape[1]  # stock raises for one value per channel
            or not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))):
        return None
    if norm.weight.dtype != torch.float32 or norm.weight.device != x.device:
        return None
    if _hooked(norm) or _hooked(act) or _global_hooks():
        return None
    return code


def batch_norm_act(x: torch.Tensor, norm: nn.Module, act: Optional[nn.Module]) -> torch.Tensor:
    """``act(norm(x))``, fused on the CPU where that is exactly what the
    modules would compute (see the module docstring).

    Args:
        x (torch.Tensor): Input of shape ``(N, C, H, W)``.
        norm (nn.Module): The normalisation layer (fused when it is an
            ``nn.BatchNorm2d`` with ``affine=True`` in training mode).
        act (nn.Module, optional): ``nn.ReLU``, ``nn.SiLU`` or None for the
            fused op; any other module is called after ``norm``.

    Returns:
        torch.Tensor: ``act(norm(x))``, in ``x``'s memory format.
    """
    code = _fused_act_code(x, norm, act)
    if code is None:
        x = norm(x)
        return x if act is None else act(x)
    factor = 0.0
    if norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        factor = (1.0 / float(norm.num_batches_tracked)
                  if norm.momentum is None else norm.momentum)
    z, mean, var = _BatchNormAct.apply(x, norm.weight.contiguous(), norm.bias.contiguous(),
                                       norm.eps, code)
    if norm.track_running_stats and norm.running_mean is not None:
        n = x.numel() // x.shape[1]
        with torch.no_grad():
            norm.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
            norm.running_var.mul_(1 - factor).add_(var, alpha=factor * n / (n - 1))
    return z


@MODELS.register_module()
class FusedConvModule(ConvModule):
    """mmcv's ``ConvModule`` whose BatchNorm + activation run as one fused
    CPU op when training (:func:`batch_norm_act`).

    Same arguments, submodules and state dict as ``ConvModule``; the fused
    path is taken for ``order=('conv', 'norm', 'act')`` with both the norm and
    the activation applied, otherwise (and wherever :func:`batch_norm_act`
    falls back) the forward is ``ConvModule.forward``.
    """

    def forward(self, x: torch.Tensor, activate: bool = True, norm: bool = True) -> torch.Tensor:
        if not (self.with_norm and norm and self.norm.training
                and self.order == ('conv', 'norm', 'act')):
            return super().forward(x, activate, norm)
        if self.with_explicit_padding:
            x = self.padding_layer(x)
        x = self.conv(x)
        act = self.activate if self.with_activation and activate else None
        return batch_norm_act(x, self.norm, act)
