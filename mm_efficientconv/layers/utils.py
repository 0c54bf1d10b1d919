# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Small helpers shared by the layers, backbones and hooks."""
import contextlib

import torch


def autocast_disabled(device_type: str):
    """A context that disables autocast for ``device_type`` (``'cpu'``,
    ``'cuda'``, ...) where it is enabled; otherwise (or for a device type
    autocast does not know) a no-op context."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, enabled=False)
    except (RuntimeError, TypeError):
        return contextlib.nullcontext()


def functorch_transforms_active() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``,
    ...) is running: custom autograd functions without a vmap rule, compiled
    ops and layout queries are refused there."""
    active = getattr(torch._C, '_are_functorch_transforms_active', None)
    return bool(active is not None and active())


def in_graph_transform() -> bool:
    """Whether the code runs under ``torch.jit`` tracing or scripting, an
    ONNX export, ``torch.compile`` / ``torch.export`` or a ``torch.func``
    transform. There the compiled CPU ops (DO-Conv composition, BatchNorm +
    activation) and the ``KernelView`` tensor subclass step aside for stock
    PyTorch operations."""
    compiler = getattr(torch, 'compiler', None)
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or bool(compiler is not None and compiler.is_compiling())
            or functorch_transforms_active())


class _OrthonormalPenalty(torch.autograd.Function):
    """``||W W^T - I||_F`` of a 2-D fp32 ``W`` with a one-matmul backward.

    Autograd of the plain expression spends two matmuls of ``W``'s size on
    the backward (``dA W`` and ``dA^T W``); since ``A = W W^T - I`` is
    symmetric, the gradient is ``2 A W / ||A||`` (one matmul with the saved
    ``A``), which makes the regulariser a third cheaper. Higher-order
    gradients differentiate the plain expression instead.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        gram = w @ w.t()
        gram.diagonal().sub_(1.0)
        norm = torch.linalg.matrix_norm(gram, ord='fro')
        ctx.save_for_backward(w, gram, norm)
        return norm

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        w, gram, norm = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: the differentiable formulation
            return torch.autograd.grad(_penalty_expression(w), w, grad, create_graph=True)
        # at ||A|| = 0 the subgradient 0, as autograd of matrix_norm (no host sync)
        scale = torch.where(norm > 0, grad * 2.0 / norm, torch.zeros_like(norm))
        return (gram @ w).mul_(scale)


def _penalty_expression(w: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(w.shape[0], device=w.device, dtype=w.dtype)
    return torch.linalg.matrix_norm(w @ w.t() - eye, ord='fro')


def orthonormal_penalty(weight: torch.Tensor) -> torch.Tensor:
    """``||W W^T - I||_F`` (unsquared Frobenius norm, the BSConv-S
    regulariser) of a weight viewed ``(rows, -1)``, e.g. a 1x1 conv weight
    ``(out, in, 1, 1)`` as ``(out, in)``.

    Computed in fp32 with autocast disabled, so the penalty is the same under
    mixed precision; its backward costs one matmul (see
    :class:`_OrthonormalPenalty`).

    Args:
        weight (Tensor): A tensor whose first dimension is the number of rows.

    Returns:
        Tensor: A differentiable fp32 scalar.
    """
    with autocast_disabled(weight.device.type):
        w = weight.reshape(weight.shape[0], -1).float()
        if torch.jit.is_tracing() or torch.jit.is_scripting() or functorch_transforms_active():
            return _penalty_expression(w)
        return _OrthonormalPenalty.apply(w)
