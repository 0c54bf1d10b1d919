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


def orthonormal_penalty(weight: torch.Tensor) -> torch.Tensor:
    """``||W W^T - I||_F`` (unsquared Frobenius norm, the BSConv-S
    regulariser) of a weight viewed ``(rows, -1)``, e.g. a 1x1 conv weight
    ``(out, in, 1, 1)`` as ``(out, in)``.

    Computed in fp32 with autocast disabled, so the penalty is the same under
    mixed precision.

    Args:
        weight (Tensor): A tensor whose first dimension is the number of rows.

    Returns:
        Tensor: A differentiable fp32 scalar.
    """
    with autocast_disabled(weight.device.type):
        w = weight.reshape(weight.shape[0], -1).float()
        eye = torch.eye(w.shape[0], device=w.device, dtype=w.dtype)
        return torch.linalg.matrix_norm(w @ w.t() - eye, ord='fro')
