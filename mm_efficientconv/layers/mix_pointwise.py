# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""MixNet's grouped 1x1 conv with uneven channel splits (TF MixNet's
``GroupedConv2D``)."""
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

from mm_efficientconv.layers.base import Conv2dInitTarget, EfficientConv2d
from mm_efficientconv.layers.kernel_cache import cached_kernel
from mm_efficientconv.layers.mixconv import _offsets, kaiming_init_parts, split_channels


@MODELS.register_module()
class MixGroupedPointwise(EfficientConv2d, Conv2dInitTarget):
    """MixNet's grouped 1x1 conv: the channels are split into ``num_splits``
    parts with the equal rule (remainder to the first part) and part ``i`` is
    a dense 1x1 conv ``in_i -> out_i``; outputs are concatenated. Unlike
    ``nn.Conv2d(groups=n)`` the splits may be uneven (TF MixNet's
    ``GroupedConv2D``).

    ``weight`` is the equivalent block-diagonal dense kernel ``(out, in, 1, 1)``
    with ``groups = 1``. When both channel counts divide by ``num_splits`` the
    forward on the CPU is one grouped conv (split/concat on other devices,
    where it is faster), and :meth:`switch_to_deploy` returns
    ``nn.Conv2d(in, out, 1, groups=num_splits)``; otherwise the forward is
    split/concat and the layer is its own deploy form. ``num_splits=1`` gives
    plain mode (exactly ``nn.Conv2d``).

    Args:
        in_channels (int): Number of input channels.
        out_channels (int): Number of output channels.
        kernel_size (int | tuple[int, int]): Must be 1. Defaults to 1.
        stride (int | tuple[int, int]): Stride. Defaults to 1.
        padding (int | tuple[int, int] | str): Padding. Defaults to 0.
        dilation (int | tuple[int, int]): Dilation (no effect on a 1x1
            kernel). Defaults to 1.
        groups (int): Must be 1 at the call site; the grouping comes from
            ``num_splits``. Defaults to 1.
        bias (bool): Whether to add a learnable bias. Defaults to True.
        padding_mode (str): As in ``nn.Conv2d``. Defaults to ``'zeros'``.
        num_splits (int): Number of channel parts. Defaults to 2.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size=1,
                 stride=1,
                 padding=0,
                 dilation=1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 *,
                 num_splits: int = 2) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode)
        if self.kernel_size != (1, 1):
            raise ValueError(f'kernel_size must be 1 for MixGroupedPointwise, got '
                             f'{kernel_size!r}')
        if groups != 1:
            raise ValueError(f'groups must be 1 for MixGroupedPointwise (use num_splits), got '
                             f'{groups!r}')
        if not isinstance(num_splits, int) or isinstance(num_splits, bool) or num_splits < 1:
            raise ValueError(f'num_splits must be a positive int, got {num_splits!r}')
        self.num_splits = num_splits
        self.in_splits: Tuple[int, ...] = ()
        self.out_splits: Tuple[int, ...] = ()
        if num_splits == 1:
            self._init_plain_conv(bias)
            return
        in_splits = split_channels(in_channels, num_splits)
        out_splits = split_channels(out_channels, num_splits)
        if min(in_splits) == 0 or min(out_splits) == 0:
            raise ValueError(f'num_splits={num_splits} is too large for in_channels='
                             f'{in_channels} / out_channels={out_channels}: splits '
                             f'{in_splits} / {out_splits} contain 0 channels')
        self.in_splits = tuple(in_splits)
        self.out_splits = tuple(out_splits)
        self.even = in_channels % num_splits == 0 and out_channels % num_splits == 0
        self.kernels = nn.ParameterList(
            [nn.Parameter(torch.empty(o, i, 1, 1)) for i, o in zip(in_splits, out_splits)])
        self._init_bias(bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default ``nn.Conv2d`` init, applied to every part as a
        conv of its own; applied by the constructor."""
        if self.plain:
            self.reset_plain_parameters()
            return
        for kernel, bias in zip(self.kernels, self._part_biases()):
            nn.init.kaiming_uniform_(kernel, a=5**0.5)
            if bias is not None:
                bound = 1 / kernel.shape[1]**0.5
                with torch.no_grad():
                    bias.uniform_(-bound, bound)

    def kaiming_init_parts(self) -> None:
        """Kaiming-normal (fan-out, ReLU) init of each part as a conv of its
        own (the TF MixNet init of its split convs; ``MixNet.init_weights``
        applies it), zero bias. Plain mode: the same on ``weight``."""
        kaiming_init_parts(self)

    def _write_kernel(self, kernel: torch.Tensor) -> None:
        """Stores a dense ``(out, in, 1, 1)`` kernel written into ``weight``:
        each part takes its diagonal block (entries off the blocks, which the
        layer does not have, are dropped). Exact for a kernel read from an
        equal layer; an initialiser writing ``weight`` gives each entry the
        statistics it gives a stock dense 1x1 conv (the reported geometry)."""
        kernel = kernel.to(device=self.kernels[0].device, dtype=self.kernels[0].dtype)
        with torch.no_grad():
            for param, (olo, ohi), (ilo, ihi) in zip(self.kernels, _offsets(self.out_splits),
                                                     _offsets(self.in_splits)):
                param.copy_(kernel[olo:ohi, ilo:ihi])

    def invalidate_cache(self) -> None:
        """Deprecated no-op: nothing is cached outside ``cached_kernels()``."""
        warnings.warn('MixGroupedPointwise.invalidate_cache() is deprecated and does nothing: '
                      'kernels are only cached inside `with cached_kernels():`',
                      DeprecationWarning, stacklevel=2)

    def _part_biases(self) -> List[Optional[torch.Tensor]]:
        if self.bias is None:
            return [None] * self.num_splits
        return list(self.bias.split(self.out_splits))

    def _block_diagonal(self, kernels: Sequence[torch.Tensor]) -> torch.Tensor:
        weight = kernels[0].new_zeros(self.out_channels, self.in_channels, 1, 1)
        for (olo, ohi), (ilo, ihi), kernel in zip(_offsets(self.out_splits),
                                                   _offsets(self.in_splits), kernels):
            weight[olo:ohi, ilo:ihi] = kernel
        return weight

    def compute_weight(self) -> torch.Tensor:
        """Block-diagonal dense kernel ``(out, in, 1, 1)`` (differentiable)."""
        return self._block_diagonal(list(self.kernels))

    def _grouped_weight(self) -> torch.Tensor:
        kernels = list(self.kernels)
        return cached_kernel(self, kernels, lambda: torch.cat(kernels, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain:
            return self._plain_forward(x)
        if self.padding_mode != 'zeros':
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        else:
            padding = self.padding
        if self.even and x.device.type == 'cpu':
            # one grouped conv on the CPU (a MixNet-S training step 5% faster than split/concat
            # there); on a GPU cuDNN runs a channels-last half-precision grouped 1x1 conv
            # through channel-slice and layout-transform kernels: split/concat, timm's way, took
            # 13% less kernel time per MixNet-S step (H200, AMP, batch 256)
            return F.conv2d(x, self._grouped_weight(), self.bias, self.stride, padding,
                            self.dilation, self.num_splits)
        outs = [
            F.conv2d(xi, kernel, bias, self.stride, padding, self.dilation)
            for xi, kernel, bias in zip(x.split(self.in_splits, 1), self.kernels,
                                        self._part_biases())
        ]
        return torch.cat(outs, 1)

    def switch_to_deploy(self) -> nn.Module:
        """Even splits: becomes (in place) a plain grouped conv with
        ``groups = num_splits`` and returns the equal
        ``nn.Conv2d(in, out, 1, groups=num_splits)``. Uneven splits: the
        split/concat layer is already its inference form; it is marked
        ``deploy=True`` and returned. Idempotent."""
        if self.plain:
            self.deploy = True
            return self.to_plain_conv()
        if not self.even:
            self.deploy = True
            return self
        with torch.no_grad():
            weight = torch.cat([k.detach() for k in self.kernels], 0).clone()
        requires_grad = self.kernels[0].requires_grad
        del self.kernels
        self._parameters['weight'] = nn.Parameter(weight, requires_grad=requires_grad)
        self.groups = self.num_splits
        self.plain = True
        self.deploy = True
        return self.to_plain_conv()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Loads a deployed checkpoint (grouped ``weight`` ``(out, in / n, 1,
        1)``, or a block-diagonal ``(out, in, 1, 1)``) into the split form,
        and a split checkpoint (``kernels.*``) into a layer deployed in
        place."""
        if self.in_splits:
            wkey = prefix + 'weight'
            kkeys = [f'{prefix}kernels.{i}' for i in range(self.num_splits)]
            if not self.plain and wkey in state_dict and kkeys[0] not in state_dict:
                dense = state_dict.pop(wkey)
                grouped = (self.out_channels, self.in_channels // self.num_splits, 1, 1)
                full = (self.out_channels, self.in_channels, 1, 1)
                if self.even and tuple(dense.shape) == grouped:
                    parts = dense.split(self.out_splits, 0)
                elif tuple(dense.shape) == full:
                    parts = [dense[olo:ohi, ilo:ihi] for (olo, ohi), (ilo, ihi) in zip(
                        _offsets(self.out_splits), _offsets(self.in_splits))]
                else:
                    parts = None
                    error_msgs.append(f'{wkey}: cannot load shape {tuple(dense.shape)}; '
                                      f'expected {full}' + (f' or {grouped}' if self.even else ''))
                for key, part in zip(kkeys, parts or ()):
                    state_dict[key] = part.clone()
            elif self.plain and wkey not in state_dict and all(k in state_dict for k in kkeys):
                state_dict[wkey] = torch.cat([state_dict.pop(k) for k in kkeys], 0)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.in_splits:
            s += f', num_splits={self.num_splits}, splits={self.in_splits}->{self.out_splits}'
        return s
