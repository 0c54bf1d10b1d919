# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""MixConv: mixed depthwise convolution (Tan & Le, BMVC 2019), and the grouped
1x1 conv with uneven channel splits that MixNet uses.

A MixConv splits the channels of a depthwise conv into ``g`` groups and gives
group ``i`` its own kernel size (3, 5, 7, ... by default); the group outputs are
concatenated. Because every group shares the stride and uses a centred padding,
zero-padding each group's kernel to the largest one and running *one*
depthwise conv computes exactly the same function. This layer has both
evaluations:

* ``'split'``: one depthwise conv per group on its channel slice, then a
  concatenation (the paper's formulation; fewest MACs, best for training);
* ``'fused'``: one depthwise conv with the zero-padded kernel (one launch, no
  split/concat; inside ``cached_kernels()`` the padded kernel is built once
  while no gradient is needed).

:class:`MixConv` is a drop-in ``conv_cfg`` for OpenMMLab call sites: it only
transforms *depthwise* convs and behaves exactly like ``nn.Conv2d`` elsewhere,
so ``conv_cfg=dict(type='MixConv', kernel_sizes=(3, 5, 7))`` on mmpretrain's
``MobileNetV2`` turns every 3x3 depthwise conv into a MixConv(3, 5, 7) and keeps
the 1x1 convs and the dense stem as they are.
"""
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

from mm_efficientconv.layers.base import Conv2dInitTarget, EfficientConv2d, same_padding
from mm_efficientconv.layers.kernel_cache import cached_kernel
from mm_efficientconv.layers.utils import functorch_transforms_active

_SPLITS = ('equal', 'exp')
_FUSE_MODES = ('auto', 'always', 'never')


def split_channels(channels: int, num_groups: int, split: str = 'equal') -> List[int]:
    """Splits ``channels`` into ``num_groups`` parts.

    Args:
        channels (int): Number of channels to split (>= 0).
        num_groups (int): Number of parts (>= 1).
        split (str): ``'equal'``: ``channels // num_groups`` each, the remainder
            added to the first part (the TF MixNet / timm rule, e.g. 10 in 3 ->
            4, 3, 3). ``'exp'``: part ``i`` gets ``channels // 2 ** (i + 1)``
            for every part but the last, which takes the rest (32 in 4 -> 16,
            8, 4, 4). Defaults to ``'equal'``.

    Returns:
        list[int]: The part sizes; they sum to ``channels`` and may contain
        zeros when there are too few channels (callers reject those).
    """
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 0:
        raise ValueError(f'channels must be a non-negative int, got {channels!r}')
    if not isinstance(num_groups, int) or isinstance(num_groups, bool) or num_groups < 1:
        raise ValueError(f'num_groups must be a positive int, got {num_groups!r}')
    if split == 'equal':
        parts = [channels // num_groups] * num_groups
        parts[0] += channels - sum(parts)
    elif split == 'exp':
        parts = [channels // 2**(i + 1) for i in range(num_groups - 1)]
        parts.append(channels - sum(parts))
    else:
        raise ValueError(f'split must be one of {_SPLITS}, got {split!r}')
    return parts


def kaiming_init_parts(layer: nn.Module) -> None:
    """Kaiming-normal (fan-out, ReLU) init of each part (``layer.kernels``) of a
    MixConv-family layer as a conv of its own, zero bias; in plain mode the
    same on ``weight`` (shared by :class:`MixConv` and ``MixGroupedPointwise``)."""
    kernels = [layer.weight] if layer.plain else list(layer.kernels)
    for kernel in kernels:
        nn.init.kaiming_normal_(kernel, mode='fan_out', nonlinearity='relu')
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _offsets(sizes: Sequence[int]) -> List[Tuple[int, int]]:
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous (NCHW).

    A stock conv's input gradient has the input's memory format; the
    channels-last group convs of :meth:`MixConv.forward_split` would otherwise
    return a channels-last gradient for an NCHW input, and every op before the
    layer then runs its slow mixed-format backward (SiLU and BatchNorm 2-4x
    slower, measured in MixNet-S)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def _needs_grad(x: torch.Tensor, params: Sequence[Optional[torch.Tensor]]) -> bool:
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p is not None and p.requires_grad for p in params)


@MODELS.register_module()
class MixConv(EfficientConv2d, Conv2dInitTarget):
    """Mixed depthwise convolution (MixConv), an ``nn.Conv2d``-compatible layer.

    The input channels are split into ``g`` groups (``split``); group ``i`` is a
    depthwise conv with kernel ``kernel_sizes[i]`` and its own centred padding;
    the outputs are concatenated. A channel multiplier (``out_channels = m *
    in_channels``) is supported: output group ``i`` has ``m`` times the
    channels of input group ``i``.

    **Where it applies.** Only depthwise call sites (``groups ==
    in_channels > 1``) are transformed. Dense (``groups=1``) and grouped
    (``1 < groups < in_channels``) call sites give *plain mode*: the layer is
    exactly ``nn.Conv2d`` with the call-site arguments (``weight``/``bias``,
    same state-dict keys and initialisation). A kernel list with a single
    kernel also gives plain mode (a one-group MixConv is a depthwise conv);
    without ``kernel_sizes`` / ``num_kernels`` the call-site kernel, padding
    and dilation are kept as they are.
    So ``conv_cfg=dict(type='MixConv', kernel_sizes=(3, 5, 7))`` on mmpretrain's
    ``MobileNetV2`` turns the 3x3 depthwise convs into MixConv(3, 5, 7) and
    leaves the 1x1 convs and the dense stem plain.

    **Kernel sizes.** ``kernel_sizes`` *replaces* the call-site
    ``kernel_size``; the call-site ``padding`` must then be the centred
    padding of the call-site kernel (``dilation * (kernel_size - 1) // 2``,
    what every depthwise call site of mmpretrain/mmdet uses), so every group
    keeps the call site's output size. Each group pads for its own kernel.

    **Attributes.** The layer reports its *effective single kernel*:
    ``kernel_size = (K, K)`` with ``K`` the largest kernel extent (in units
    of ``dilation``), ``padding`` its centred padding, ``dilation`` the
    call-site dilation and ``groups = in_channels``. ``layer.weight`` is the
    zero-padded dense depthwise kernel ``(out, 1, K, K)`` (dilated kernels
    expanded with zeros), so ``F.conv2d(x, layer.weight, layer.bias,
    layer.stride, layer.padding, layer.dilation, layer.groups)`` equals
    ``layer(x)`` (after padding ``x`` for a non-zero ``padding_mode``).

    Args:
        in_channels (int): Number of input channels.
        out_channels (int): Number of output channels.
        kernel_size (int | tuple[int, int]): Call-site kernel size; replaced
            by ``kernel_sizes`` / ``num_kernels`` when given.
        stride (int | tuple[int, int]): Stride, shared by all groups.
            Defaults to 1.
        padding (int | tuple[int, int] | str): Call-site padding. Defaults
            to 0.
        dilation (int | tuple[int, int]): Dilation of every group. Defaults
            to 1.
        groups (int): Call-site groups; the transform applies when it equals
            ``in_channels``. Defaults to 1.
        bias (bool): Whether to add a learnable bias. Defaults to True.
        padding_mode (str): ``'zeros'``, ``'reflect'``, ``'replicate'`` or
            ``'circular'``; exact for every mode (the input is padded once
            for the largest kernel and cropped per group). Defaults to
            ``'zeros'``.
        kernel_sizes (Sequence[int], optional): Odd kernel size of each
            group, e.g. ``(3, 5, 7)``. Defaults to None.
        num_kernels (int, optional): Shortcut for ``kernel_sizes=(3, 5, ...,
            2 * num_kernels + 1)``; exclusive with ``kernel_sizes``. When both
            are None the call-site kernel is used alone (plain mode).
            Defaults to None.
        split (str): Channel split, ``'equal'`` (remainder to the first
            group) or ``'exp'`` (halving, the last group takes the rest); see
            :func:`split_channels`. Defaults to ``'equal'``.
        dilated (bool): The paper's dilated variant: at stride 1, a group
            with kernel ``k > 3`` becomes a 3x3 kernel with dilation
            ``(k - 1) // 2`` (same receptive field, fewer parameters).
            Ignored when the stride is not 1; incompatible with a call-site
            dilation other than 1. Defaults to False.
        fuse (str): Evaluation path. ``'auto'``: the fused single conv when
            no gradient is needed (inference), split/concat when training;
            under ``torch.jit.trace`` always split/concat, so a trace does not
            depend on the grad mode it was recorded in (its check re-runs
            without gradients) and FLOP counters see the mixed kernels (the
            deploy form is the single fused conv). ``'always'`` / ``'never'``
            force fused / split. Both are exact.
            Inside ``cached_kernels()`` the fused kernel is built once while
            no gradient is needed. Defaults to ``'auto'``.
    """

    # Use channels-last group convs when training on the CPU (see
    # ``forward_split``). Exact either way; a class attribute for benchmarks.
    _channels_last_grad = True

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size,
                 stride=1,
                 padding=0,
                 dilation=1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 *,
                 kernel_sizes: Optional[Sequence[int]] = None,
                 num_kernels: Optional[int] = None,
                 split: str = 'equal',
                 dilated: bool = False,
                 fuse: str = 'auto') -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode)
        if fuse not in _FUSE_MODES:
            raise ValueError(f'fuse must be one of {_FUSE_MODES}, got {fuse!r}')
        if split not in _SPLITS:
            raise ValueError(f'split must be one of {_SPLITS}, got {split!r}')
        if not isinstance(dilated, bool):
            raise ValueError(f'dilated must be a bool, got {dilated!r}')
        self.fuse_mode = fuse
        self.split = split
        self.dilated = dilated
        requested = self._requested_kernel_sizes(kernel_sizes, num_kernels)

        # Per-group state; empty in plain mode.
        self.kernel_sizes: Tuple[int, ...] = ()
        self.in_splits: Tuple[int, ...] = ()
        self.out_splits: Tuple[int, ...] = ()
        self.group_dilations: Tuple[int, ...] = ()  # in units of self.dilation

        depthwise = groups == in_channels and in_channels > 1
        if not depthwise:
            # Dense or grouped call site: exactly nn.Conv2d with its arguments.
            self._init_plain_conv(bias)
            return
        if requested is not None:
            self._check_centred_padding()
            sizes = requested
        else:
            if self.kernel_size[0] != self.kernel_size[1]:
                # A non-square depthwise kernel with no kernel list: nothing to mix.
                self._init_plain_conv(bias)
                return
            sizes = (self.kernel_size[0], )
        if dilated and self.dilation != (1, 1):
            raise ValueError(f'dilated=True needs dilation=1 at the call site, got '
                             f'dilation={self.dilation}')
        use_dilation = dilated and self.stride == (1, 1)
        kernels, dilations = [], []
        for k in sizes:
            if use_dilation and k > 3:
                kernels.append(3)
                dilations.append((k - 1) // 2)
            else:
                kernels.append(k)
                dilations.append(1)
        extent = max(d * (k - 1) + 1 for k, d in zip(kernels, dilations))
        if len(sizes) == 1:
            # One group is a depthwise conv: plain mode with that group's
            # geometry; the call-site kernel keeps the call-site padding.
            if requested is not None:
                self.kernel_size = (kernels[0], kernels[0])
                self.dilation = tuple(dilations[0] * d for d in self.dilation)
                self.padding = same_padding(self.kernel_size, self.dilation)
            self._init_plain_conv(bias)
            return

        in_splits = split_channels(in_channels, len(sizes), split)
        if min(in_splits) == 0:
            raise ValueError(f'kernel_sizes={tuple(sizes)} cannot split in_channels='
                             f'{in_channels} with split={split!r}: got {in_splits}, a group '
                             'would have 0 channels; use fewer kernels or more channels')
        multiplier = out_channels // in_channels
        self.kernel_sizes = tuple(sizes)
        self.in_splits = tuple(in_splits)
        self.out_splits = tuple(c * multiplier for c in in_splits)
        self.group_dilations = tuple(dilations)
        self._group_kernels = tuple(kernels)
        self.kernel_size = (extent, extent)
        self.padding = same_padding(self.kernel_size, self.dilation)
        self.kernels = nn.ParameterList(
            [nn.Parameter(torch.empty(o, 1, k, k)) for o, k in zip(self.out_splits, kernels)])
        self._init_bias(bias)
        self.reset_parameters()

    # ------------------------------------------------------------ arguments
    @staticmethod
    def _requested_kernel_sizes(kernel_sizes, num_kernels) -> Optional[Tuple[int, ...]]:
        if kernel_sizes is not None and num_kernels is not None:
            raise ValueError('give either kernel_sizes or num_kernels, not both (got '
                             f'kernel_sizes={kernel_sizes!r}, num_kernels={num_kernels!r})')
        if num_kernels is not None:
            if not isinstance(num_kernels, int) or isinstance(num_kernels, bool) \
                    or num_kernels < 1:
                raise ValueError(f'num_kernels must be a positive int, got {num_kernels!r}')
            return tuple(2 * i + 3 for i in range(num_kernels))
        if kernel_sizes is None:
            return None
        if isinstance(kernel_sizes, int) and not isinstance(kernel_sizes, bool):
            kernel_sizes = (kernel_sizes, )
        try:
            sizes = tuple(kernel_sizes)
        except TypeError:
            raise ValueError(f'kernel_sizes must be a sequence of odd ints, got '
                             f'{kernel_sizes!r}') from None
        if not sizes or not all(
                isinstance(k, int) and not isinstance(k, bool) and k >= 1 and k % 2 == 1
                for k in sizes):
            raise ValueError(f'kernel_sizes must be a non-empty sequence of odd ints >= 1, '
                             f'got {kernel_sizes!r}')
        return sizes

    def _check_centred_padding(self) -> None:
        centred = tuple(d * (k - 1) / 2 for k, d in zip(self.kernel_size, self.dilation))
        if tuple(self.padding) != centred:
            raise ValueError(
                f'padding={self.padding} must be the centred padding of the call-site '
                f'kernel_size={self.kernel_size} (dilation={self.dilation}) when kernel_sizes '
                'replaces it, i.e. dilation * (kernel_size - 1) // 2 with an odd kernel')

    # ------------------------------------------------------------- parameters
    def reset_parameters(self) -> None:
        """PyTorch's default ``nn.Conv2d`` init, applied to every group as
        an independent depthwise conv (what timm's ``MixedConv2d`` starts
        from); applied by the constructor."""
        if self.plain:
            self.reset_plain_parameters()
            return
        biases = self._group_biases()
        for kernel, bias in zip(self.kernels, biases):
            nn.init.kaiming_uniform_(kernel, a=5**0.5)
            if bias is not None:
                fan_in = kernel.shape[1] * kernel.shape[2] * kernel.shape[3]
                bound = 1 / fan_in**0.5
                with torch.no_grad():
                    bias.uniform_(-bound, bound)

    def kaiming_init_parts(self) -> None:
        """Kaiming-normal (fan-out, ReLU) init of each group kernel as a conv
        of its own (the TF MixNet init; ``MixNet.init_weights`` applies it),
        zero bias. Plain mode: the same on ``weight``."""
        kaiming_init_parts(self)

    def _write_kernel(self, kernel: torch.Tensor) -> None:
        """Stores a dense kernel ``(out, 1, K, K)`` written into ``weight``:
        each group takes its centred, dilation-strided taps (the taps it has;
        the others are dropped, as they are when such a kernel is loaded from
        a state dict). Exact for a kernel read from an equal layer; an
        initialiser writing ``weight`` gives each tap the statistics it gives
        a stock ``K x K`` depthwise conv (the layer's reported geometry)."""
        parts = self._split_dense(kernel.to(device=self.kernels[0].device,
                                            dtype=self.kernels[0].dtype))
        with torch.no_grad():
            for param, part in zip(self.kernels, parts):
                param.copy_(part)

    def invalidate_cache(self) -> None:
        """Deprecated no-op: nothing is cached outside ``cached_kernels()``."""
        warnings.warn(f'{type(self).__name__}.invalidate_cache() is deprecated and does '
                      'nothing: kernels are only cached inside `with cached_kernels():`',
                      DeprecationWarning, stacklevel=2)

    def _group_biases(self) -> List[Optional[torch.Tensor]]:
        if self.bias is None:
            return [None] * len(self.out_splits)
        return list(self.bias.split(self.out_splits))

    def _group_padding(self, i: int) -> Tuple[int, int]:
        """Centred padding (in pixels) of group ``i``."""
        k, g = self._group_kernels[i], self.group_dilations[i]
        return tuple(g * d * (k - 1) // 2 for d in self.dilation)

    # ----------------------------------------------------------- dense kernel
    def _dense_kernel(self, kernels: Sequence[torch.Tensor]) -> torch.Tensor:
        (K, _), ref = self.kernel_size, kernels[0]
        weight = ref.new_zeros(self.out_channels, 1, K, K)
        for (lo, hi), kernel, k, g in zip(_offsets(self.out_splits), kernels,
                                         self._group_kernels, self.group_dilations):
            ext = g * (k - 1) + 1
            start = (K - ext) // 2
            weight[lo:hi, :, start:start + ext:g, start:start + ext:g] = kernel
        return weight

    def compute_weight(self) -> torch.Tensor:
        """The zero-padded dense depthwise kernel ``(out, 1, K, K)``
        (differentiable)."""
        return self._dense_kernel(list(self.kernels))

    def _fused_weight(self) -> torch.Tensor:
        return cached_kernel(self, list(self.kernels), self.compute_weight)

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain:
            return self._plain_forward(x)
        if self.fuse_mode == 'always' or (self.fuse_mode == 'auto' and not torch.jit.is_tracing()
                                          and not _needs_grad(x, [*self.kernels, self.bias])):
            return self.forward_fused(x)
        return self.forward_split(x)

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """One depthwise conv with the zero-padded kernel."""
        return self._conv_forward(x, self._fused_weight(), self.bias)

    def forward_split(self, x: torch.Tensor) -> torch.Tensor:
        """One depthwise conv per group on its channel slice, then concat."""
        biases = self._group_biases()
        # the layout choices below are eager-only: torch.func transforms (vmap, grad) take
        # neither layout queries nor _ContiguousGrad, and a trace must not depend on grad mode
        eager = not (functorch_transforms_active() or torch.jit.is_tracing())
        caller_channels_last = eager and x.is_contiguous(memory_format=torch.channels_last)
        channels_last = eager and self._channels_last_grad and x.device.type == 'cpu' and \
            torch.is_grad_enabled() and any(k.requires_grad for k in self.kernels)
        if channels_last and not caller_channels_last and x.requires_grad:
            x = _ContiguousGrad.apply(x)
        if self.padding_mode == 'zeros':
            inputs = x.split(self.in_splits, 1)
            paddings = [self._group_padding(i) for i in range(len(self.in_splits))]
        else:
            # Pad once for the largest kernel; a centred crop of it is exactly
            # the padding of each smaller group (true for every padding mode).
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            H, W = x.shape[-2:]
            inputs, paddings = [], []
            for i, xi in enumerate(x.split(self.in_splits, 1)):
                ch, cw = (P - p for P, p in zip(self.padding, self._group_padding(i)))
                inputs.append(xi[..., ch:H - ch, cw:W - cw])
                paddings.append((0, 0))
        # On the CPU, oneDNN computes the weight gradient of a depthwise conv
        # with a kernel larger than 3x3 through a slow im2col+GEMM path for
        # NCHW tensors, but with a direct kernel for channels-last ones. Each
        # group's slice is copied anyway (a channel slice is not contiguous),
        # so copying it to channels-last costs nothing extra; fwd+bwd of
        # MixConv(3, 5, 7, 9) gets ~3x faster. Inference keeps NCHW (faster).
        # Output and input gradient keep the caller's format.
        # On a GPU, a channel slice of a channels-last input handed to cuDNN as it is runs
        # through its strided-tensor transforms; copied to channels-last first, a MixNet-S
        # training step took 3% less kernel time (H200, AMP, batch 256).
        if channels_last or (caller_channels_last and x.device.type != 'cpu'):
            inputs = [xi.contiguous(memory_format=torch.channels_last) for xi in inputs]
        outs = [
            F.conv2d(xi, kernel, bias, self.stride, pad,
                     tuple(g * d for d in self.dilation), xi.shape[1])
            for xi, kernel, bias, pad, g in zip(inputs, self.kernels, biases, paddings,
                                                 self.group_dilations)
        ]
        out = torch.cat(outs, 1)
        if channels_last and not caller_channels_last:
            out = out.contiguous()  # hand back the caller's memory format
        return out

    # ----------------------------------------------------------------- deploy
    def switch_to_deploy(self) -> nn.Module:
        """Folds the groups into one depthwise conv.

        In place, the layer becomes plain (a ``weight`` Parameter holding the
        zero-padded kernel; ``kernels`` is deleted; ``deploy=True``). Returns a
        new ``nn.Conv2d`` (depthwise, ``kernel_size=(K, K)``) computing the same
        function, which the parent should hold. Idempotent.
        """
        if self.plain:
            self.deploy = True
            return self.to_plain_conv()
        with torch.no_grad():
            weight = self.compute_weight().detach().clone()
        requires_grad = self.kernels[0].requires_grad
        del self.kernels
        self._parameters['weight'] = nn.Parameter(weight, requires_grad=requires_grad)
        self.plain = True
        self.deploy = True
        return self.to_plain_conv()

    # ------------------------------------------------------------ state dicts
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Converts between the two parameterisations on load.

        * A dense ``weight`` (a deployed checkpoint, or a stock depthwise conv)
          loading into a transform-mode layer: each group takes the centred
          ``k x k`` window of its output rows (zero-padded if the dense kernel
          is smaller), then its dilated taps. This is exact when the weight
          came from a MixConv of the same configuration (its outer ring is
          zero); otherwise taps outside a group's kernel are dropped. A stock
          3x3 depthwise kernel loads function-preserving into non-dilated
          groups (it is zero-padded).
        * ``kernels.*`` (a training checkpoint) loading into a layer deployed
          in place: they are folded into the dense ``weight``.
        """
        if self.kernel_sizes:
            wkey = prefix + 'weight'
            kkeys = [f'{prefix}kernels.{i}' for i in range(len(self.kernel_sizes))]
            if not self.plain and wkey in state_dict and kkeys[0] not in state_dict:
                dense = state_dict.pop(wkey)
                try:
                    for key, kernel in zip(kkeys, self._split_dense(dense)):
                        state_dict[key] = kernel
                except ValueError as err:
                    error_msgs.append(f'{wkey}: {err}')
            elif self.plain and wkey not in state_dict and all(k in state_dict for k in kkeys):
                kernels = [state_dict.pop(k) for k in kkeys]
                state_dict[wkey] = self._dense_kernel(kernels)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _split_dense(self, dense: torch.Tensor) -> List[torch.Tensor]:
        Kd = dense.shape[-1]
        if dense.dim() != 4 or dense.shape[:2] != (self.out_channels, 1) \
                or dense.shape[2] != Kd or Kd % 2 == 0:
            raise ValueError(f'cannot load a dense kernel of shape {tuple(dense.shape)} into '
                             f'MixConv groups {self.kernel_sizes}; expected '
                             f'({self.out_channels}, 1, K, K) with an odd K')
        kernels = []
        for (lo, hi), k, g in zip(_offsets(self.out_splits), self._group_kernels,
                                  self.group_dilations):
            ext = g * (k - 1) + 1
            rows = dense[lo:hi]
            if Kd >= ext:
                s = (Kd - ext) // 2
                window = rows[..., s:s + ext, s:s + ext]
            else:
                p = (ext - Kd) // 2
                window = F.pad(rows, (p, p, p, p))
            kernels.append(window[..., ::g, ::g].clone())
        return kernels

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.kernel_sizes:
            s += (f', kernel_sizes={self.kernel_sizes}, splits={self.in_splits}, '
                  f'split={self.split!r}, dilated={self.dilated}, fuse={self.fuse_mode!r}')
        return s


def __getattr__(name: str):
    # MixGroupedPointwise moved to mix_pointwise.py; this keeps
    # `from mm_efficientconv.layers.mixconv import MixGroupedPointwise` working
    # without importing it here (mix_pointwise imports from this module).
    if name == 'MixGroupedPointwise':
        from mm_efficientconv.layers.mix_pointwise import MixGroupedPointwise
        return MixGroupedPointwise
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
