# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Blueprint separable convolutions (BSConv; Haase & Amthor, CVPR 2020).

Every ``K x K x M`` filter of a regular convolution is modelled as one
``K x K`` *blueprint* ``B[n]`` scaled along the input depth by ``M`` weights
``W[n, m]``: the effective dense kernel is ``w[n, m] = W[n, m] * B[n]``.

* :class:`BSConvU` (unconstrained): a 1x1 conv ``M -> N`` followed by a
  ``K x K`` depthwise conv on the ``N`` output channels (``M*N + N*K^2``
  parameters instead of ``M*N*K^2``).
* :class:`BSConvS` (subspace): ``W`` is factorised through ``M' < M`` channels
  (``W = W_A W_B`` with the projection ``W_B`` of shape ``M' x M``), which is
  pushed towards orthonormal rows by :meth:`BSConvS.reg_loss`.

Both are drop-in ``nn.Conv2d`` replacements for ``conv_cfg`` (see
:class:`~mm_efficientconv.layers.base.EfficientConv2d`): at call sites where
the transform does not apply (1x1 kernels, grouped/depthwise convs, kernel
sizes filtered out by ``convert_kernel_sizes``) they are plain convolutions, so
``conv_cfg=dict(type='BSConvU')`` on a ResNet converts the regular 3x3 convs
(as in the paper) and leaves the 1x1 convs regular.

(A little over 500 lines: the two variants share a base class that holds the
conversion filter, the mid norms and the dense-kernel projection; one file
keeps the one concept together.)
"""
import math
from numbers import Real
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from mm_efficientconv.layers.base import Conv2dInitTarget, EfficientConv2d, IntOrPair
from mm_efficientconv.layers.utils import orthonormal_penalty

KernelSizes = Optional[Union[int, Sequence[IntOrPair]]]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_kernel_sizes(value: KernelSizes) -> Optional[Tuple[Tuple[int, int], ...]]:
    """``None`` or a tuple of ``(kh, kw)`` pairs; ints ``k`` mean ``(k, k)``."""
    if value is None:
        return None
    message = ('convert_kernel_sizes must be None or an iterable of positive ints or '
               f'(kh, kw) pairs of positive ints, e.g. (3, 5) or [(3, 3), (1, 7)]; got {value!r}')
    if _is_int(value):
        value = (value, )
    if isinstance(value, (str, bytes)):
        raise ValueError(message)
    try:
        items = list(value)
    except TypeError:
        raise ValueError(message) from None
    sizes = []
    for item in items:
        if _is_int(item):
            pair = (item, item)
        elif isinstance(item, (tuple, list)) and len(item) == 2 and all(_is_int(v) for v in item):
            pair = tuple(item)
        else:
            raise ValueError(message)
        if min(pair) < 1:
            raise ValueError(message)
        sizes.append(pair)
    return tuple(sizes)


class _BSConvBase(EfficientConv2d):
    """What BSConv-U and BSConv-S share: the conversion filter, the depthwise
    blueprint conv ``dw`` carrying the geometry, the layer bias applied inside
    ``dw``, the optional mid norms, initialisation and the dense kernel."""

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
                 convert_kernel_sizes: KernelSizes = None,
                 mid_norm_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode)
        self.convert_kernel_sizes = _parse_kernel_sizes(convert_kernel_sizes)
        if mid_norm_cfg is not None and not isinstance(mid_norm_cfg, dict):
            raise ValueError(f'mid_norm_cfg must be None or a dict such as dict(type="BN"), '
                             f'got {mid_norm_cfg!r}')
        self.mid_norm_names: Tuple[str, ...] = ()
        if not self._converts():
            # nn.Conv2d in all but name: same parameters, keys and init.
            self.mid_norm_cfg = None
            self._init_plain_conv(bias)
            return
        self.mid_norm_cfg = mid_norm_cfg

    def _converts(self) -> bool:
        """Whether this call site gets the blueprint transform."""
        if self.groups != 1 or self.kernel_size == (1, 1):
            return False
        return self.convert_kernel_sizes is None or self.kernel_size in self.convert_kernel_sizes

    # ------------------------------------------------------------ construction
    def _add_mid_norm(self, num_features: int, postfix: Union[int, str]) -> None:
        """Builds ``mid_norm_cfg`` with mmcv (imported only here) and registers
        it under mmcv's name (``bn``, ``bn1``, ``gn2``, ...)."""
        from mmcv.cnn import build_norm_layer
        name, norm = build_norm_layer(self.mid_norm_cfg, num_features, postfix=postfix)
        if name in ('pw', 'pw1', 'pw2', 'dw', 'bias', 'weight'):
            raise ValueError(f'mid_norm_cfg builds a layer named {name!r}, which clashes with '
                             'the layer\'s own attributes')
        self.add_module(name, norm)
        self.mid_norm_names = self.mid_norm_names + (name, )

    def _add_depthwise(self, bias: bool) -> None:
        """The blueprint conv (``groups=out``, no bias of its own) and the
        layer's ``bias``."""
        self.dw = nn.Conv2d(self.out_channels, self.out_channels, self.kernel_size, self.stride,
                            self.padding, self.dilation, groups=self.out_channels, bias=False,
                            padding_mode=self.padding_mode)
        self._init_bias(bias)

    # ------------------------------------------------------------------ forward
    def _mid_norm(self, y: torch.Tensor, index: int) -> torch.Tensor:
        if index < len(self.mid_norm_names):
            y = getattr(self, self.mid_norm_names[index])(y)
        return y

    def _depthwise_forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.dw._conv_forward(y, self.dw.weight, self.bias)

    # ------------------------------------------------------------ dense kernel
    def _pointwise_matrix(self) -> torch.Tensor:
        """The ``(out, in)`` depth weights ``W`` of the dense kernel."""
        raise NotImplementedError

    def compute_weight(self) -> torch.Tensor:
        """The effective dense kernel ``w[n, m] = dw[n, 0] * W[n, m]`` of shape
        ``(out, in, kh, kw)`` (differentiable).

        Raises:
            RuntimeError: With a mid norm in training mode (the function then
                depends on batch statistics).
            NotImplementedError: With a mid norm in eval mode: an affine norm
                between the pointwise and the depthwise conv adds a per-channel
                constant that zero padding does not carry to the borders, so
                the layer is not one convolution there.
        """
        if self.plain:
            return self.weight
        if self.mid_norm_names:
            if self.training:
                raise RuntimeError(
                    f'{type(self).__name__} with mid_norm_cfg has no dense kernel in training '
                    'mode: the norm uses batch statistics')
            raise NotImplementedError(
                f'{type(self).__name__} with mid_norm_cfg is not a single convolution: the '
                'norm\'s shift is a per-channel constant before the depthwise conv that zero '
                'padding drops at the borders; the dense `weight` is only defined without a '
                'mid norm')
        return self.dw.weight * self._pointwise_matrix()[:, :, None, None]

    # ------------------------------------------------------------------- init
    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s default init of the effective kernel (kaiming-uniform
        with ``a=sqrt(5)`` drawn for the dense ``(out, in, kh, kw)`` kernel,
        stored by :meth:`_write_kernel`, so every filter has the norm a stock
        conv's filter has), ``nn.Conv2d``'s default bias, norms to weight 1 /
        bias 0. (The reference implementation leaves PyTorch's default init on
        each factor, which gives the effective kernel about 0.6x the std of a
        stock conv.) Plain mode: ``nn.Conv2d``'s default init."""
        if self.plain:
            self.reset_plain_parameters()
            return
        for name in self.mid_norm_names:
            getattr(self, name).reset_parameters()
        for child in self.children():
            if isinstance(child, nn.Conv2d):
                child.reset_parameters()
        if not self.mid_norm_names:
            self._write_kernel(self._default_kernel(self.dw.weight))
        self._reset_default_bias()

    def _blueprint_factors(self, kernel: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(rows, blueprints)``: per output filter ``n`` the best rank-1
        approximation ``rows[n] x blueprints[n]`` of ``kernel[n]`` (viewed
        ``(in, kh*kw)``), scaled to keep the filter's Frobenius norm, split
        evenly between the two factors. Exact for blueprint kernels."""
        n, m = self.out_channels, self.in_channels
        w = kernel.reshape(n, m, -1).double()
        u, _, vh = torch.linalg.svd(w, full_matrices=False)
        scale = w.flatten(1).norm(dim=1).sqrt()[:, None]
        return u[:, :, 0] * scale, vh[:, 0, :] * scale

    def _write_kernel(self, kernel: torch.Tensor) -> None:
        """Stores a dense kernel ``(out, in, kh, kw)`` written into ``weight``
        (by an initialiser, ``.data.copy_``, ...): each filter becomes its
        best blueprint approximation with the same Frobenius norm (exact for a
        blueprint kernel, e.g. one read from an equal layer or a constant; an
        initialiser's random kernel keeps its per-filter norm, hence the
        layer's kernel std). Raises with a mid norm (no dense kernel)."""
        self.compute_weight()  # raises with a mid norm
        expected = (self.out_channels, self.in_channels, *self.kernel_size)
        if tuple(kernel.shape) != expected:
            raise ValueError(f'{type(self).__name__}: a kernel written into weight must have '
                             f'shape {expected}, got {tuple(kernel.shape)}')
        rows, blueprints = self._blueprint_factors(kernel)
        self._store_factors(rows, blueprints.view(self.dw.weight.shape))

    def _store_factors(self, rows: torch.Tensor, blueprints: torch.Tensor) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.mid_norm_cfg is not None:
            s += f", mid_norm={self.mid_norm_cfg.get('type')}"
        return s


@MODELS.register_module()
class BSConvU(_BSConvBase, Conv2dInitTarget):
    """Unconstrained blueprint separable convolution (BSConv-U).

    A 1x1 conv ``pw`` (``in -> out``, no bias), optionally a norm, then a
    ``K x K`` depthwise conv ``dw`` on the ``out`` channels that carries
    stride, padding, dilation and ``padding_mode``; the layer's ``bias`` is
    added by the depthwise conv. Parameters: ``in*out + out*kh*kw (+ out)``.
    As in the paper there is no norm or activation between the two convs by
    default.

    **Plain mode.** The layer is exactly an ``nn.Conv2d`` (parameters
    ``weight``/``bias`` with ``nn.Conv2d``'s shapes, keys and init) when the
    kernel is 1x1, when ``groups != 1`` (grouped and depthwise call sites) or
    when the kernel size is not in ``convert_kernel_sizes``. ``mid_norm_cfg``
    is then ignored.

    ``weight`` is the effective dense kernel ``(out, in, kh, kw)``, so
    ``F.conv2d(x, layer.weight, layer.bias, ...)`` equals ``layer(x)``; it is
    undefined with a mid norm (see :meth:`compute_weight`).

    Args:
        in_channels (int): Number of input channels.
        out_channels (int): Number of output channels.
        kernel_size (int | tuple[int, int]): Kernel size.
        stride (int | tuple[int, int]): Stride. Defaults to 1.
        padding (int | tuple[int, int] | str): Padding. Defaults to 0.
        dilation (int | tuple[int, int]): Dilation. Defaults to 1.
        groups (int): Groups; any value other than 1 gives plain mode.
            Defaults to 1.
        bias (bool): Whether to add a learnable bias. Defaults to True.
        padding_mode (str): ``'zeros'``, ``'reflect'``, ``'replicate'`` or
            ``'circular'``. Defaults to ``'zeros'``.
        convert_kernel_sizes (Iterable[int | tuple[int, int]], optional):
            Kernel sizes that get the transform; ints ``k`` mean ``(k, k)``,
            e.g. ``(3, 5)`` as the reference replacer. ``None`` converts every
            kernel larger than 1x1. Defaults to None.
        mid_norm_cfg (dict, optional): Norm between ``pw`` and ``dw`` (the
            reference's ``with_bn``), built with mmcv's ``build_norm_layer``
            and named as mmcv names it (``bn`` for BN). Defaults to None.
    """

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
                 convert_kernel_sizes: KernelSizes = None,
                 mid_norm_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, convert_kernel_sizes=convert_kernel_sizes,
                         mid_norm_cfg=mid_norm_cfg)
        if self.plain:
            return
        self.pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        if mid_norm_cfg is not None:
            self._add_mid_norm(out_channels, postfix='')
        self._add_depthwise(bias)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain:
            return self._plain_forward(x)
        return self._depthwise_forward(self._mid_norm(self.pw(x), 0))

    def _pointwise_matrix(self) -> torch.Tensor:
        return self.pw.weight.flatten(1)

    def _store_factors(self, rows: torch.Tensor, blueprints: torch.Tensor) -> None:
        with torch.no_grad():
            self.pw.weight.copy_(rows.view_as(self.pw.weight))
            self.dw.weight.copy_(blueprints)

    def switch_to_deploy(self) -> nn.Module:
        """Inference form; returns the module the parent should hold.

        BSConv-U is already minimal, so this returns ``self`` (``deploy=True``)
        unchanged, except that an eval-mode affine BatchNorm mid norm is
        folded into ``pw`` (mmcv's conv-BN fusion) and ``bias`` where that is
        exact: with no padding or a non-zero ``padding_mode`` (which pads the
        BN shift, a per-channel constant, with itself). Under zero padding, or
        for other norms or a norm in training mode, the norm is kept. Plain mode returns an equal
        ``nn.Conv2d``. Idempotent.
        """
        if self.plain:
            return super().switch_to_deploy()
        if self.deploy:
            return self
        if self.mid_norm_names:
            self._fold_mid_batchnorm()
        self.deploy = True
        return self

    def _fold_mid_batchnorm(self) -> None:
        name = self.mid_norm_names[0]
        norm = getattr(self, name)
        exact_padding = self.padding == (0, 0) or self.padding_mode != 'zeros'
        if not (isinstance(norm, _BatchNorm) and not norm.training and norm.affine
                and exact_padding and norm.running_mean is not None
                and norm.running_var is not None):
            return
        from mmcv.cnn.utils.fuse_conv_bn import _fuse_conv_bn

        # mmcv folds the BN into pw (scaled weight, bias = the BN shift t).
        # The shift then has to pass through the depthwise conv, which mmcv
        # has no helper for: dw(pad(s*u + t)) = dw(pad(s*u)) + t * sum(B) when
        # the padding carries constants (no padding or a non-zero mode).
        _fuse_conv_bn(self.pw, norm)
        shift = self.pw.bias
        self.pw.bias = None
        with torch.no_grad():
            extra_bias = shift * self.dw.weight.sum(dim=(1, 2, 3))
            if self.bias is None:
                self.bias = nn.Parameter(extra_bias.detach().clone())
            else:
                self.bias.add_(extra_bias.to(self.bias.dtype))
        delattr(self, name)
        self.mid_norm_names = ()
        self.mid_norm_cfg = None


@MODELS.register_module()
class BSConvS(_BSConvBase, Conv2dInitTarget):
    """Subspace blueprint separable convolution (BSConv-S).

    ``pw1`` (1x1, ``in -> mid``, no bias), ``pw2`` (1x1, ``mid -> out``, no
    bias), then the ``K x K`` depthwise conv ``dw`` as in :class:`BSConvU`;
    ``mid = min(in, max(min_mid_channels, ceil(p * in)))`` as in the reference
    implementation. Parameters: ``in*mid + mid*out + out*kh*kw (+ out)``.
    :meth:`reg_loss` is the paper's orthonormality penalty on the projection
    ``W_B = pw1.weight``; add ``alpha * reg_loss()`` to the training loss (the
    ``OrthoRegHook`` does this for every module with ``reg_loss``).

    **Plain mode.** As :class:`BSConvU`: an exact ``nn.Conv2d`` for 1x1
    kernels, ``groups != 1`` and kernel sizes not in
    ``convert_kernel_sizes``; :meth:`reg_loss` then returns a zero scalar and
    ``mid_channels`` is None.

    Args:
        in_channels (int): Number of input channels.
        out_channels (int): Number of output channels.
        kernel_size (int | tuple[int, int]): Kernel size.
        stride (int | tuple[int, int]): Stride. Defaults to 1.
        padding (int | tuple[int, int] | str): Padding. Defaults to 0.
        dilation (int | tuple[int, int]): Dilation. Defaults to 1.
        groups (int): Groups; any value other than 1 gives plain mode.
            Defaults to 1.
        bias (bool): Whether to add a learnable bias. Defaults to True.
        padding_mode (str): ``'zeros'``, ``'reflect'``, ``'replicate'`` or
            ``'circular'``. Defaults to ``'zeros'``.
        convert_kernel_sizes (Iterable[int | tuple[int, int]], optional):
            Kernel sizes that get the transform (see :class:`BSConvU`).
            Defaults to None (every kernel larger than 1x1).
        p (float): Subspace ratio ``mid / in``, in ``(0, 1]``. The paper uses
            1/6. Defaults to 0.25 (the reference implementation's default).
        min_mid_channels (int): Lower bound of ``mid`` (capped at ``in``).
            Defaults to 4.
        mid_norm_cfg (dict, optional): Norms after ``pw1`` (``mid``
            channels) and after ``pw2`` (``out`` channels), where the
            reference's ``with_bn`` puts its two BNs; built with mmcv's
            ``build_norm_layer`` (named ``bn1``/``bn2`` for BN).
            Defaults to None.
    """

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
                 convert_kernel_sizes: KernelSizes = None,
                 p: float = 0.25,
                 min_mid_channels: int = 4,
                 mid_norm_cfg: Optional[dict] = None) -> None:
        if not isinstance(p, Real) or isinstance(p, bool) or not 0 < p <= 1:
            raise ValueError(f'p must be a number with 0 < p <= 1, got {p!r}')
        if not _is_int(min_mid_channels) or min_mid_channels < 1:
            raise ValueError(f'min_mid_channels must be an int >= 1, got {min_mid_channels!r}')
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, convert_kernel_sizes=convert_kernel_sizes,
                         mid_norm_cfg=mid_norm_cfg)
        self.p = float(p)
        self.min_mid_channels = min_mid_channels
        self.merged = False
        self.mid_channels: Optional[int] = None
        if self.plain:
            return
        mid = min(in_channels, max(min_mid_channels, math.ceil(self.p * in_channels)))
        self.mid_channels = mid
        self.pw1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        if mid_norm_cfg is not None:
            self._add_mid_norm(mid, postfix=1)
        self.pw2 = nn.Conv2d(mid, out_channels, 1, bias=False)
        if mid_norm_cfg is not None:
            self._add_mid_norm(out_channels, postfix=2)
        self._add_depthwise(bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As :meth:`BSConvU.reset_parameters`; the projection ``pw1`` then
        has orthonormal rows (see :meth:`_store_factors`; with a mid norm,
        where no dense kernel exists, ``nn.init.orthogonal_``): the
        regulariser's optimum, so :meth:`reg_loss` starts at 0 instead of
        ``~sqrt(mid) * 2/3`` (PyTorch's default init of ``pw1``) and cannot
        dwarf the task loss."""
        super().reset_parameters()
        if not self.plain and self.mid_norm_names:
            nn.init.orthogonal_(self.pw1.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain:
            return self._plain_forward(x)
        if self.merged:
            y = self.pw(x)
        else:
            y = self._mid_norm(self.pw2(self._mid_norm(self.pw1(x), 0)), 1)
        return self._depthwise_forward(y)

    def _pointwise_matrix(self) -> torch.Tensor:
        if self.merged:
            return self.pw.weight.flatten(1)
        return self.pw2.weight.flatten(1) @ self.pw1.weight.flatten(1)

    def _store_factors(self, rows: torch.Tensor, blueprints: torch.Tensor) -> None:
        """``rows`` ``(out, in)`` through the subspace: ``pw1`` = the top
        ``mid`` right singular vectors of ``rows`` (orthonormal rows, so the
        regulariser is 0), ``pw2 = rows @ pw1^T``; the blueprints are rescaled
        so that every filter keeps its norm (exact when ``rank(rows) <=
        mid``)."""
        if self.merged:
            with torch.no_grad():
                self.pw.weight.copy_(rows.view_as(self.pw.weight))
                self.dw.weight.copy_(blueprints)
            return
        _, _, vh = torch.linalg.svd(rows, full_matrices=True)
        proj = vh[:self.mid_channels]  # (mid, in), orthonormal rows
        mix = rows @ proj.t()  # (out, mid)
        kept = (mix @ proj).norm(dim=1)
        full = rows.norm(dim=1)
        ratio = torch.where(kept > 0, full / kept.clamp_min(1e-300), torch.zeros_like(full))
        with torch.no_grad():
            self.pw1.weight.copy_(proj.view_as(self.pw1.weight))
            self.pw2.weight.copy_(mix.view_as(self.pw2.weight))
            self.dw.weight.copy_(blueprints * ratio.view(-1, 1, 1, 1))

    def reg_loss(self) -> torch.Tensor:
        """Orthonormality penalty ``||W_B W_B^T - I||_F`` (unsquared Frobenius
        norm, computed in fp32 outside autocast) of the projection
        ``W_B = pw1.weight`` viewed ``(mid, in)``; a differentiable scalar.

        In plain mode there is no projection and this is a zero fp32 scalar on
        the weight's device.

        Raises:
            RuntimeError: After :meth:`switch_to_deploy` merged ``pw1`` and
                ``pw2`` (the deploy form has no projection).
        """
        if self.plain:
            return self.weight.new_zeros((), dtype=torch.float32)
        if self.merged:
            raise RuntimeError('BSConvS.reg_loss() is undefined after switch_to_deploy() merged '
                               'pw1 and pw2: the deploy form has no projection; compute the '
                               'regulariser on the training form')
        return orthonormal_penalty(self.pw1.weight)

    def switch_to_deploy(self) -> nn.Module:
        """Inference form; returns the module the parent should hold.

        Merges ``pw2 @ pw1`` into one 1x1 conv ``pw`` (``in -> out``) when that
        lowers the MACs, i.e. ``in*out < mid*(in + out)``, and there is no mid
        norm; otherwise the layer is kept as it is. Returns ``self``
        (``deploy=True``); plain mode returns an equal ``nn.Conv2d``.
        Idempotent. After merging, :meth:`reg_loss` raises.
        """
        if self.plain:
            return super().switch_to_deploy()
        if self.deploy:
            return self
        cin, cout, mid = self.in_channels, self.out_channels, self.mid_channels
        if not self.mid_norm_names and cin * cout < mid * (cin + cout):
            self._merge_pointwise()
        self.deploy = True
        return self

    def _merge_pointwise(self) -> None:
        w1, w2 = self.pw1.weight, self.pw2.weight
        pw = nn.Conv2d(self.in_channels, self.out_channels, 1, bias=False)
        pw = pw.to(device=w1.device, dtype=w1.dtype).train(self.training)
        with torch.no_grad():
            merged = w2.flatten(1).double() @ w1.flatten(1).double()
            pw.weight.copy_(merged.view_as(pw.weight).to(w1.dtype))
        del self.pw1, self.pw2
        self.pw = pw
        self._modules['dw'] = self._modules.pop('dw')  # keep the order pw -> dw
        self.merged = True

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if not self.plain:
            s += f', mid_channels={self.mid_channels}, p={self.p:g}'
            if self.merged:
                s += ', merged=True'
        return s
