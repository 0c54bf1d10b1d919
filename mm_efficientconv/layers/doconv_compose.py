# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The DO-Conv kernel composition ``W'[o, c, s] = sum_d D[i(o, c), s, d] W[o, c, d]``.

Two implementations with one entry point, :func:`doconv_compose`:

* :func:`compose_with_matmul` -- PyTorch ops (one batched matmul over the
  input channels); every device and dtype, differentiable to any order.
* a fused CPU kernel from the compiled op ``mm_efficientconv._ext``, used for
  float32/float64 CPU tensors of 3x3 (any ``kh * kw = 9``) DO-Convs with
  ``D_mul = 9``, the setting of the paper and of every config here. The
  composition is memory-bound on a CPU; the matmul formulation needs the input
  channel as batch dimension, i.e. transposed copies of the kernel-sized
  tensors in both directions, while the fused kernel reads ``W`` and writes the
  kernel once (forward) and reads the kernel gradient and ``W`` and writes the
  ``W`` gradient once (backward), four output channels at a time against
  each input channel's 9x9 matrix held in AVX2 registers (8-lane vectors; the
  ninth column as one dot product). On the 2-core AMD EPYC (AVX2) VM this
  project is developed on, one thread, 512x512 channels: forward 1.8 ms,
  backward 4.3 ms (a copy of ``W`` 1.6 ms, an add 2.0 ms); see
  ``mm_efficientconv.benchmark``.

The compiled op is optional (``pip install --no-build-isolation -e .`` builds
it; a failed build only warns). Whether it is used: :func:`fused_compose_available`;
``MMEFF_WITH_OPS=0`` in the environment, or ``set_fused_compose(False)``,
turns it off. It is never used while tracing, scripting, exporting to ONNX,
compiling with ``torch.compile`` or under ``torch.func`` transforms (``vmap``,
``grad``), which see the PyTorch formulation.
"""
import os
import warnings
from typing import Optional, Tuple, Union

import torch

from mm_efficientconv.layers.utils import in_graph_transform

try:  # pragma: no cover - depends on the build
    from mm_efficientconv import _ext
    _EXT_ERROR = None
except ImportError as e:  # pragma: no cover
    _ext = None
    # without a compiled module Python's message blames a circular import; say what is missing
    _EXT_ERROR = ('no compiled module mm_efficientconv/_ext*.so for this Python'
                  if str(e).startswith('cannot import name') else str(e))

#: Taps (``kh * kw``) and ``D_mul`` the fused kernel is compiled for.
FUSED_TAPS = 9
FUSED_D_MUL = 9

_fused_enabled = os.environ.get('MMEFF_WITH_OPS', '1') != '0'


def fused_compose_available() -> bool:
    """Whether the compiled fused CPU composition is importable and enabled."""
    return _ext is not None and _fused_enabled


def set_fused_compose(enabled: bool) -> bool:
    """Enables or disables the fused CPU composition; returns the previous
    setting. Disabled, every composition uses :func:`compose_with_matmul`."""
    global _fused_enabled
    previous, _fused_enabled = _fused_enabled, bool(enabled)
    return previous


def compose_with_matmul(W: torch.Tensor, D: torch.Tensor, groups: int,
                        kernel_size: Tuple[int, int]) -> torch.Tensor:
    """The composition in PyTorch ops (differentiable to any order, any
    device and dtype); arguments and result as in :func:`doconv_compose`."""
    out_channels, in_per_group, d_mul = W.shape
    num_taps = D.shape[1]
    if groups == 1:
        # one bmm over the input channels on strided views (no operand copies):
        # (in, out, D_mul) @ (in, D_mul, kh*kw) -> (in, out, kh*kw)
        kernel = torch.bmm(W.transpose(0, 1), D.transpose(1, 2)).transpose(0, 1)
        return kernel.reshape(out_channels, in_per_group, *kernel_size).contiguous()
    # batch (g, c): (out/g, D_mul) @ (D_mul, kh*kw) for every group g and input c of the group
    w = W.reshape(groups, out_channels // groups, in_per_group, d_mul).transpose(1, 2)
    d = D.reshape(groups, in_per_group, num_taps, d_mul).transpose(-1, -2)
    kernel = torch.matmul(w, d).transpose(1, 2)  # (g, out/g, in/g, kh*kw)
    # contiguous: a strided kernel makes the conv reorder it at every call
    return kernel.reshape(out_channels, in_per_group, *kernel_size).contiguous()


class _FusedCompose(torch.autograd.Function):
    """The fused CPU composition; ``(out, in // groups, kh * kw)``."""

    @staticmethod
    def forward(ctx, W: torch.Tensor, D: torch.Tensor, groups: int) -> torch.Tensor:
        ctx.save_for_backward(W, D)
        ctx.groups = groups
        return _ext.doconv_compose_forward(W, D, groups)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        W, D = ctx.saved_tensors
        if torch.is_grad_enabled():
            # higher-order gradients: differentiate the PyTorch formulation instead
            kernel = compose_with_matmul(W, D, ctx.groups, (D.shape[1], 1)).flatten(2)
            grad_W, grad_D = torch.autograd.grad(kernel, (W, D), grad, create_graph=True)
            return grad_W, grad_D, None
        grad_W, grad_D = _ext.doconv_compose_backward(grad.contiguous(), W, D, ctx.groups)
        return grad_W, grad_D, None


def uses_fused_compose(W: torch.Tensor, D: torch.Tensor) -> bool:
    """Whether :func:`doconv_compose` takes the fused CPU kernel for these
    operands."""
    return (fused_compose_available() and not in_graph_transform() and W.device.type == 'cpu'
            and W.dtype in (torch.float32, torch.float64) and D.dtype == W.dtype
            and D.device == W.device and W.dim() == 3 and D.dim() == 3
            and D.shape[1] == FUSED_TAPS and D.shape[2] == FUSED_D_MUL
            and W.shape[2] == FUSED_D_MUL)


_missing_ext_reported = False


def _report_missing_ext_once(W: torch.Tensor, D: torch.Tensor) -> None:
    """Says once per process that the PyTorch composition runs where the
    compiled op would have (a wheel built without it, a failed compile)."""
    global _missing_ext_reported
    if (_missing_ext_reported or _ext is not None or not _fused_enabled
            or W.device.type != 'cpu' or D.shape[1:] != (FUSED_TAPS, FUSED_D_MUL)):
        return
    _missing_ext_reported = True
    warnings.warn(
        'mm_efficientconv._ext (the fused CPU DO-Conv composition) is not built '
        f'({_EXT_ERROR}); using the PyTorch composition: same results, slower CPU '
        'training. Reinstall with `pip install --no-build-isolation` and a C++ '
        'compiler to build it, or set MMEFF_WITH_OPS=0 to silence this.',
        RuntimeWarning, stacklevel=3)


def compose_residual(W: torch.Tensor, D_prime: torch.Tensor, kernel_size: Tuple[int, int],
                     allow_view: bool = False) -> torch.Tensor:
    """The kernel of a dense (``groups == 1``) DO-Conv from ``D' = D - I``:
    per input channel ``c``, ``K_c = W_c[:, :kh*kw] + W_c D'_c^T``, one
    ``baddbmm`` (differentiable to any order).

    Where the convolutions are fast (a GPU) a DO-Conv network's training step
    is bound by per-operator dispatch, so this form keeps the operators and
    autograd nodes few: no ``D' + I``, no separate ``bmm`` and add and, with
    ``allow_view`` while a gradient is needed, no copy either -- the kernel is
    then a transposed view that the convolution reads as it is (it makes its
    own contiguous copy inside one operator). On the CPU this saved 27% of a
    small DO-Conv's composition overhead per forward + backward.

    Args:
        W (Tensor): ``(out, in, D_mul)``.
        D_prime (Tensor): ``(in, kh * kw, D_mul)``.
        kernel_size (tuple[int, int]): ``(kh, kw)``.
        allow_view (bool): Whether a non-contiguous kernel may be returned
            while a gradient is needed (for a convolution only; ``weight``
            stays contiguous, as a stock conv's). Defaults to False.

    Returns:
        Tensor: The kernel ``(out, in, kh, kw)``.
    """
    num_taps = D_prime.shape[1]
    w_t = W.transpose(0, 1)  # (in, out, D_mul), a view
    base = w_t if w_t.shape[2] == num_taps else w_t[..., :num_taps]
    kernel = torch.baddbmm(base, w_t, D_prime.transpose(1, 2)).transpose(0, 1)
    if not (allow_view and torch.is_grad_enabled()
            and (W.requires_grad or D_prime.requires_grad)):
        kernel = kernel.contiguous()
    return kernel.view(W.shape[0], W.shape[1], *kernel_size)


def doconv_identity(num_taps: int, d_mul: int, dtype: Optional[torch.dtype] = None,
                    device: Optional[Union[str, torch.device]] = None) -> torch.Tensor:
    """The ``(num_taps, d_mul)`` identity that ``D' = D - I`` is stored
    relative to (columns beyond ``num_taps`` are zero)."""
    return torch.eye(num_taps, d_mul, dtype=dtype, device=device)


def doconv_kernel(W: torch.Tensor, D_prime: torch.Tensor, identity: Optional[torch.Tensor],
                  groups: int, kernel_size: Tuple[int, int],
                  allow_view: bool = False) -> torch.Tensor:
    """The kernel of a DO-Conv from its stored parameters (differentiable):
    the fused CPU op where it applies, :func:`compose_residual` for other
    dense convs (GPUs, other dtypes, ``D_mul > kh * kw``), otherwise
    :func:`compose_with_matmul` (grouped and depthwise convs, and while
    tracing, exporting or compiling).

    Args:
        W (Tensor): ``(out, in // groups, D_mul)``.
        D_prime (Tensor): ``D' = D - I``, ``(in, kh * kw, D_mul)``.
        identity (Tensor, optional): ``I``, ``(kh * kw, D_mul)``; None: built
            (:func:`doconv_identity`) only on the paths that add it.
        groups (int): Groups of the convolution.
        kernel_size (tuple[int, int]): ``(kh, kw)``.
        allow_view (bool): See :func:`compose_residual`. Defaults to False.

    Returns:
        Tensor: The kernel ``(out, in // groups, kh, kw)``.
    """
    if uses_fused_compose(W, D_prime):
        return _compose_fused(W, _full_d(D_prime, identity), groups, kernel_size)
    _report_missing_ext_once(W, D_prime)
    if (groups == 1 and not in_graph_transform() and W.dtype == D_prime.dtype
            and W.device == D_prime.device):
        return compose_residual(W, D_prime, kernel_size, allow_view)
    return compose_with_matmul(W, _full_d(D_prime, identity), groups, kernel_size)


def _full_d(D_prime: torch.Tensor, identity: Optional[torch.Tensor]) -> torch.Tensor:
    """``D = D' + I``."""
    if identity is None:
        identity = doconv_identity(D_prime.shape[1], D_prime.shape[2], D_prime.dtype,
                                   D_prime.device)
    return D_prime + identity.to(D_prime.dtype)


def _compose_fused(W: torch.Tensor, D: torch.Tensor, groups: int,
                   kernel_size: Tuple[int, int]) -> torch.Tensor:
    kernel = _FusedCompose.apply(W.contiguous(), D.contiguous(), groups)
    return kernel.view(W.shape[0], W.shape[1], *kernel_size)


def doconv_compose(W: torch.Tensor, D: torch.Tensor, groups: int,
                   kernel_size: Tuple[int, int]) -> torch.Tensor:
    """Composes the dense conv kernel of a DO-Conv (differentiable).

    Every kernel slice is composed with the depthwise matrix of its *true*
    input channel, for plain, grouped, depthwise and depthwise-with-multiplier
    convolutions alike.

    Args:
        W (Tensor): Conv kernel ``(out, in // groups, D_mul)``.
        D (Tensor): Full depthwise kernel ``(in, kh * kw, D_mul)`` (that is
            ``D' + I``, not the stored ``D'``).
        groups (int): Groups of the convolution.
        kernel_size (tuple[int, int]): ``(kh, kw)``.

    Returns:
        Tensor: The contiguous kernel ``(out, in // groups, kh, kw)``.
    """
    _report_missing_ext_once(W, D)
    if uses_fused_compose(W, D):
        return _compose_fused(W, D, groups, kernel_size)
    return compose_with_matmul(W, D, groups, kernel_size)
