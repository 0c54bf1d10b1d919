# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""DO-Conv: depthwise over-parameterized convolution (Cao et al., TIP 2022).

A ``kh x kw`` convolution with kernel ``W'`` is over-parameterised as the
composition of a depthwise kernel ``D`` (one ``(kh*kw, D_mul)`` matrix per
input channel) and a conv kernel ``W`` of shape ``(out, in // groups,
D_mul)``. The composed kernel

    ``W'[o, c, s] = sum_d D[i(o, c), s, d] * W[o, c, d]``

(``i(o, c)`` being the true input channel that slice ``c`` of output ``o``
reads) is computed once per step and applied as one ordinary convolution
("kernel composition"), which is equivalent to the paper's "feature
composition" (depthwise conv with ``D`` producing ``in * D_mul`` channels,
then a grouped 1x1 conv with ``W``). After training the kernel is folded into
a plain ``nn.Conv2d``.
"""
import math
import warnings
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.registry import MODELS

from mm_efficientconv.layers.base import Conv2dInitTarget, EfficientConv2d, IntOrPair
from mm_efficientconv.layers.doconv_compose import doconv_compose, doconv_identity, doconv_kernel
from mm_efficientconv.layers.kernel_cache import cached_kernel
from mm_efficientconv.layers.utils import autocast_disabled


def dct_basis(size: int, dtype: torch.dtype = torch.float64,
              device: Optional[Union[str, torch.device]] = None) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``(size, size)`` (rows are frequencies;
    every entry of row 0 is ``1 / sqrt(size)``, so no column of any leading
    block of rows is zero)."""
    n = torch.arange(size, dtype=torch.float64, device=device)
    basis = torch.cos(math.pi * (2 * n[None] + 1) * n[:, None] / (2 * size)) * math.sqrt(2 / size)
    basis[0] /= math.sqrt(2)
    return basis.to(dtype)


@MODELS.register_module()
class DOConv(EfficientConv2d, Conv2dInitTarget):
    """Depthwise over-parameterized convolution, a drop-in ``nn.Conv2d``.

    The layer trains ``W`` (``(out, in // groups, D_mul)``) and ``D' = D - I``
    (``(in, kh * kw, D_mul)``, zero at initialisation, so the layer starts as
    the plain conv with kernel ``W[:, :, :kh * kw]``). ``I`` is a constant
    built on ``D``'s device and dtype where it is used (:attr:`identity`):
    never saved, never a parameter, and not a buffer, so that ``to_empty()``
    after a meta-device construction leaves nothing uninitialised. Grouped
    (DO-GConv), depthwise and depthwise-with-multiplier (DO-DConv)
    convolutions index ``D`` by the true input channel of each kernel slice.

    Behaviour worth knowing:

    - **1x1 convolutions are plain**: with ``kh * kw == 1`` there is nothing
      to over-parameterise, so the layer is exactly an ``nn.Conv2d`` (``weight``
      / ``bias`` parameters, same state-dict keys and initialisation) and
      ``D_mul`` is ignored.
    - **Cost**: the kernel is composed at every forward (one small batched
      contraction, then one ordinary conv), so the output is always a
      function of the current ``W`` and ``D'``. Inside
      :func:`~mm_efficientconv.layers.cached_kernels` (opened around
      validation and test by ``KernelCacheHook``) it is composed once and
      reused while no gradient is needed, so an unfolded DO-Conv then
      evaluates at the cost of a plain conv.
    - **Writing a kernel**: a dense kernel enters the layer (from
      ``nn.Conv2d``'s default init in the constructor, from an initialiser or
      any in-place write to ``weight``, or from a plain checkpoint) as
      ``W = w Q`` and ``D = Q[:kh*kw]`` (``D' = D - I``) with ``w`` the kernel
      viewed ``(out, in // groups, kh*kw)`` and ``Q`` orthonormal, so the
      composed kernel is exactly ``w``. With ``D_mul == kh * kw`` (the
      default) ``Q = I``: ``W = w`` and ``D' = 0``, the paper's start. With
      ``D_mul > kh * kw``, ``Q`` is the DCT-II basis of ``R^D_mul``: the extra
      columns of ``W`` and ``D'`` are then non-zero and receive gradients
      (with ``Q = I`` they would both be zero and stay zero forever).
    - **Folding**: :meth:`switch_to_deploy` turns the layer into a plain conv
      in place and returns an equal ``nn.Conv2d``.
    - **Checkpoints**: a plain conv's ``weight`` (+ ``bias``) loads into a
      DO-Conv (stored as above: identical outputs),
      so stock pretrained models load strictly into their DO-Conv versions.
      Checkpoints of the reference implementation (keys ``W``, ``D``,
      ``d_diag``) load too, and ``W`` / ``D`` load into a folded layer.

    Args:
        in_channels (int): Number of input channels.
        out_channels (int): Number of output channels.
        kernel_size (int | tuple[int, int]): Kernel size.
        stride (int | tuple[int, int]): Stride. Defaults to 1.
        padding (int | tuple[int, int] | str): Padding, as in ``nn.Conv2d``.
            Defaults to 0.
        dilation (int | tuple[int, int]): Dilation. Defaults to 1.
        groups (int): Groups; ``groups == in_channels`` gives DO-DConv.
            Defaults to 1.
        bias (bool): Whether to add a learnable bias. Defaults to True.
        padding_mode (str): ``'zeros'``, ``'reflect'``, ``'replicate'`` or
            ``'circular'``. Defaults to ``'zeros'``.
        D_mul (int, optional): Keyword-only depth multiplier of the
            over-parameterisation; must be ``>= kh * kw`` (the paper's best
            setting is ``kh * kw``). Defaults to None, meaning ``kh * kw``.
    """

    #: Whether to reuse the composed kernel inside a ``cached_kernels()``
    #: scope (deprecated switch; outside a scope nothing is cached).
    cache_kernel: bool = True

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntOrPair,
                 stride: IntOrPair = 1,
                 padding: Union[IntOrPair, str] = 0,
                 dilation: IntOrPair = 1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 *,
                 D_mul: Optional[int] = None) -> None:  # noqa: N803
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode)
        num_taps = self.kernel_size[0] * self.kernel_size[1]
        if D_mul is None:
            D_mul = num_taps
        if not isinstance(D_mul, int) or isinstance(D_mul, bool) or D_mul < num_taps:
            raise ValueError(f'D_mul must be an int >= kernel_size[0] * kernel_size[1] = '
                             f'{num_taps} (any larger value is allowed), got {D_mul!r}')
        if num_taps == 1:
            self.D_mul = 1
            self._init_plain_conv(bias)
            return
        self.D_mul = D_mul
        self.W = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, D_mul))
        self.D = nn.Parameter(torch.zeros(in_channels, num_taps, D_mul))
        self._init_bias(bias)
        self.reset_parameters()

    # --------------------------------------------------------------- init
    @property
    def num_taps(self) -> int:
        """``kh * kw``."""
        return self.kernel_size[0] * self.kernel_size[1]

    @property
    def identity(self) -> torch.Tensor:
        """``I`` ``(kh * kw, D_mul)``, on ``D``'s device and dtype."""
        return doconv_identity(self.num_taps, self.D_mul, self.D.dtype, self.D.device)

    def reset_parameters(self) -> None:
        """``nn.Conv2d.reset_parameters`` applied to the effective kernel
        (kaiming-uniform with ``a=sqrt(5)`` and the fan-in of the
        ``(out, in // groups, kh, kw)`` kernel, stored as described in the
        class docstring: ``D' = 0`` for the default ``D_mul``), uniform
        bias."""
        if self.plain:
            self.reset_plain_parameters()
            return
        self._write_kernel(self._default_kernel(self.W))
        self._reset_default_bias()

    def factorise(self, kernel: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(W, D')`` whose composition is exactly ``kernel`` (see the class
        docstring), in ``kernel``'s dtype and device.

        Args:
            kernel (Tensor): ``(out, in // groups, kh, kw)``.
        """
        out_c, in_per_group, num_taps = (self.out_channels, self.in_channels // self.groups,
                                         self.num_taps)
        d_mul = self.D_mul
        w = kernel.reshape(out_c, in_per_group, num_taps)
        eye = doconv_identity(num_taps, d_mul, kernel.dtype, kernel.device)
        if d_mul == num_taps:
            W = w.clone()
            d_prime = kernel.new_zeros(self.in_channels, num_taps, d_mul)
        else:
            compute = torch.float64 if kernel.dtype in (torch.float32,
                                                        torch.float64) else kernel.dtype
            rows = dct_basis(d_mul, compute, kernel.device)[:num_taps]  # (taps, D_mul)
            W = (w.to(compute) @ rows).to(kernel.dtype)
            d_prime = (rows.to(kernel.dtype) - eye).expand(self.in_channels, -1, -1).clone()
        return W, d_prime

    def _write_kernel(self, kernel: torch.Tensor) -> None:
        """Stores a dense kernel written into ``weight`` (see the class
        docstring): the layer then computes exactly that conv."""
        expected = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if tuple(kernel.shape) != expected:
            raise ValueError(f'DOConv: a kernel written into weight must have shape {expected}, '
                             f'got {tuple(kernel.shape)}')
        W, d_prime = self.factorise(kernel.to(device=self.W.device, dtype=self.W.dtype))
        with torch.no_grad():
            self.W.copy_(W)
            self.D.copy_(d_prime)

    # ------------------------------------------------------------ compute
    def compute_weight(self) -> torch.Tensor:
        """The composed kernel ``(out, in // groups, kh, kw)``, contiguous
        (differentiable; composed in the parameters' dtype, outside autocast).
        """
        return self._compose(allow_view=False)

    def _compose(self, allow_view: bool) -> torch.Tensor:
        if self.plain:
            return self.weight
        W, D = self.W, self.D
        with autocast_disabled(W.device.type):
            # I: built by the paths that add it (a GPU's residual path does not)
            return doconv_kernel(W, D, None, self.groups, self.kernel_size, allow_view)

    def _forward_kernel(self) -> torch.Tensor:
        """The kernel for the convolution (a view while a gradient is needed,
        see :func:`~.doconv_compose.compose_residual`)."""
        return self._compose(allow_view=True)

    def invalidate_cache(self) -> None:
        """Deprecated no-op: nothing is cached outside a
        :func:`~mm_efficientconv.layers.cached_kernels` scope."""
        warnings.warn('DOConv.invalidate_cache() is deprecated and does nothing: kernels are '
                      'only cached inside `with cached_kernels():`', DeprecationWarning,
                      stacklevel=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain:
            return self._plain_forward(x)
        if self.cache_kernel:
            weight = cached_kernel(self, (self.W, self.D), self._forward_kernel)
        else:
            weight = self._forward_kernel()
        return self._conv_forward(x, weight, self.bias)

    # ------------------------------------------------------------- deploy
    def switch_to_deploy(self) -> nn.Module:
        """Folds the composed kernel into a ``weight`` parameter in place
        (``W``, ``D`` and the identity are deleted; the layer becomes a plain
        conv) and returns an equal ``nn.Conv2d`` for the parent to hold.
        Idempotent."""
        if not self.plain:
            requires_grad = self.W.requires_grad
            with torch.no_grad():
                weight = self.compute_weight().detach().clone()
            del self.W, self.D
            bias = self._parameters.pop('bias')
            self._parameters['weight'] = nn.Parameter(weight, requires_grad=requires_grad)
            self._parameters['bias'] = bias
            self.plain = True
            self.deploy = True
        return self.to_plain_conv()

    # -------------------------------------------------------- checkpoints
    def _reference_bug_applies(self) -> bool:
        """Whether yangyanli/DO-Conv composes this layer with wrong input
        channels (grouped convs, depthwise convs with a channel multiplier)."""
        g = self.groups
        return (1 < g < self.in_channels) or (g == self.in_channels > 1
                                              and self.out_channels != self.in_channels)

    def _warn_reference_bug(self, prefix: str, d_prime: torch.Tensor) -> None:
        if self._reference_bug_applies() and bool(torch.any(d_prime != 0)):
            warnings.warn(
                f'{prefix}d_diag: reference DO-Conv checkpoint of a grouped/depthwise-multiplier '
                f'conv (groups={self.groups}); the reference implementation composed such '
                'kernels with the wrong input channels, so the loaded layer (which uses the '
                'true channels) computes a different function than the checkpoint did.')

    @staticmethod
    def _size_mismatch(key: str, got, expected: tuple) -> str:
        expected = ', '.join(str(v) for v in expected)
        return (f'size mismatch for {key}: copying a param with shape {got} from checkpoint, '
                f'the shape in current model is ({expected}) (DOConv).')

    def _plain_to_factorised(self, state_dict: dict, prefix: str, error_msgs: list) -> None:
        """A plain conv's ``weight`` becomes ``(W, D')`` by :meth:`factorise`
        (identical function; ``W = weight``, ``D' = 0`` for the default
        ``D_mul``)."""
        key_weight, key_w, key_d = prefix + 'weight', prefix + 'W', prefix + 'D'
        if key_weight not in state_dict or key_w in state_dict or key_d in state_dict:
            return
        weight = state_dict.pop(key_weight)
        expected = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != expected:
            shape = weight.shape if isinstance(weight, torch.Tensor) else type(weight).__name__
            error_msgs.append(self._size_mismatch(key_weight, shape, expected))
            return
        state_dict[key_w], state_dict[key_d] = self.factorise(weight)

    def _reference_to_ours(self, state_dict: dict, prefix: str) -> None:
        """Reference layout: ``D`` is ``D - d_diag`` with ``d_diag`` a saved
        identity (repeated over the ``D_mul`` columns there); re-express ``D``
        relative to our identity and drop ``d_diag``."""
        key_diag, key_d = prefix + 'd_diag', prefix + 'D'
        if key_diag not in state_dict:
            return
        d_diag = state_dict.pop(key_diag)
        D = state_dict.get(key_d)
        if not isinstance(D, torch.Tensor) or not isinstance(d_diag, torch.Tensor):
            return
        if D.shape != d_diag.shape or D.shape != self.D.shape:
            return  # the D shape check of the regular loading reports it
        # exact when d_diag equals our identity (the default D_mul = kh * kw)
        diff = d_diag.to(D.dtype) - doconv_identity(self.num_taps, self.D_mul, D.dtype, D.device)
        D = D + diff
        state_dict[key_d] = D
        self._warn_reference_bug(prefix, D)

    def _factorised_to_plain(self, state_dict: dict, prefix: str, error_msgs: list) -> None:
        """``W`` / ``D`` (ours or the reference layout) load into a plain or
        folded layer by composing ``weight``."""
        key_weight, key_w = prefix + 'weight', prefix + 'W'
        if key_w not in state_dict or key_weight in state_dict:
            return
        W = state_dict.pop(key_w)
        D = state_dict.pop(prefix + 'D', None)
        d_diag = state_dict.pop(prefix + 'd_diag', None)
        out_c, in_per_group = self.out_channels, self.in_channels // self.groups
        num_taps = self.num_taps
        if (not isinstance(W, torch.Tensor) or W.dim() != 3
                or tuple(W.shape[:2]) != (out_c, in_per_group)):
            error_msgs.append(
                self._size_mismatch(key_w, getattr(W, 'shape', None),
                                    (out_c, in_per_group, 'D_mul')))
            return
        d_mul = W.shape[2]
        if D is None:
            if d_mul != num_taps:
                error_msgs.append(self._size_mismatch(key_w, W.shape,
                                                      (out_c, in_per_group, num_taps)))
                return
            state_dict[key_weight] = W.reshape(out_c, in_per_group, *self.kernel_size)
            return
        if tuple(D.shape) != (self.in_channels, num_taps, d_mul):
            error_msgs.append(self._size_mismatch(prefix + 'D', D.shape,
                                                  (self.in_channels, num_taps, d_mul)))
            return
        compute_dtype = torch.float64 if W.dtype in (torch.float32, torch.float64) else W.dtype
        if isinstance(d_diag, torch.Tensor) and d_diag.shape == D.shape:
            full = D.to(compute_dtype) + d_diag.to(device=D.device, dtype=compute_dtype)
            self._warn_reference_bug(prefix, full - doconv_identity(
                num_taps, d_mul, compute_dtype, D.device))
        else:
            full = D.to(compute_dtype) + doconv_identity(num_taps, d_mul, compute_dtype, D.device)
        with torch.no_grad():
            weight = doconv_compose(W.to(device=D.device, dtype=compute_dtype), full,
                                    self.groups, self.kernel_size)
        state_dict[key_weight] = weight.to(W.dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        if self.plain:
            self._factorised_to_plain(state_dict, prefix, error_msgs)
        else:
            self._plain_to_factorised(state_dict, prefix, error_msgs)
            self._reference_to_ours(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if not self.plain:
            s += f', D_mul={self.D_mul}'
        return s
