# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The ``nn.Conv2d`` contract shared by every conv layer of this package.

A layer of this package is a drop-in replacement for ``nn.Conv2d``: it takes the
same constructor arguments (its own extras keyword-only), exposes the attributes
that :class:`mmcv.cnn.ConvModule` and users read (``in_channels``, ``groups``,
``transposed``, ...), and a ``weight`` that is the *effective dense kernel*, so
``F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding,
layer.dilation, layer.groups)`` (plus padding for non-zero ``padding_mode``)
equals ``layer(x)``.

Where a layer's transform does not apply at a call site (a 1x1 conv for
DO-Conv, a dense conv for MixConv, ...), the layer is in *plain mode*: it owns a
``weight``/``bias`` exactly like ``nn.Conv2d`` (same shapes, same state-dict
keys, same initialisation) and computes the same function.

Initialisation follows ``nn.Conv2d`` too: a layer starts with the equivalent
of PyTorch's default conv init (:meth:`EfficientConv2d.reset_parameters`) and
has no ``init_weights()``, so mmcv's ``ConvModule`` and mmengine's
``BaseModule`` treat it as a stock conv. Initialisers write ``layer.weight``
in place; in transform mode ``weight`` is a
:class:`~mm_efficientconv.layers.kernel_view.KernelView`, which stores such
writes (also through ``.data``, ``.detach()`` or views, and assignments
``layer.weight = tensor``) into the layer's own parameters through
``_write_kernel``. Every concrete layer also has a direct base class named
``Conv2d`` (:class:`Conv2dInitTarget`), so mmengine's initialisers with
``layer='Conv2d'`` select it as they select a stock conv.
"""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from mm_efficientconv.layers.kernel_view import KernelView, kernel_view
from mm_efficientconv.layers.utils import in_graph_transform

_PADDING_MODES = ('zeros', 'reflect', 'replicate', 'circular')

IntOrPair = Union[int, Tuple[int, int]]


def _check_positive_pair(name: str, value, allow_zero: bool = False) -> Tuple[int, int]:
    pair = _pair(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f'{name} must be an int or a pair of ints, got {value!r}')
    low = 0 if allow_zero else 1
    if any(v < low for v in pair):
        raise ValueError(f'{name} must be >= {low}, got {value!r}')
    return pair


def same_padding(kernel_size: Tuple[int, int], dilation: Tuple[int, int]) -> Tuple[int, int]:
    """Centred ('same' for stride 1) padding of an odd kernel; used by every
    layer that mixes kernel sizes."""
    return tuple(d * (k - 1) // 2 for k, d in zip(kernel_size, dilation))


class Conv2dInitTarget:
    """Marker base class named ``Conv2d``.

    mmengine's initialisers (``dict(type='Kaiming', layer='Conv2d')`` etc.)
    select a module when ``layer`` names its class or one of its *direct*
    base classes. Every registered layer of this package lists this class as a
    direct base, so those initialisers reach it exactly where they reach a
    stock conv (and write its ``weight``, see :class:`EfficientConv2d`). It
    adds no attributes and is not an ``nn.Conv2d`` (``isinstance`` checks for
    ``nn.Conv2d`` stay false).
    """

    __slots__ = ()


Conv2dInitTarget.__name__ = 'Conv2d'
Conv2dInitTarget.__qualname__ = 'Conv2d'
Conv2d = Conv2dInitTarget  # resolvable under its __qualname__ (pickling the class)


class EfficientConv2d(nn.Module):
    """Base class: argument validation, conv attributes, padding handling and
    the plain-conv fallback shared by ``BSConvU``, ``BSConvS``, ``MixConv`` and
    ``DOConv``.

    Subclasses implement :meth:`compute_weight` (the effective dense kernel in
    transform mode) and their own ``forward`` for transform mode; in plain mode
    they call :meth:`_plain_forward`.

    Args:
        in_channels (int): Number of input channels.
        out_channels (int): Number of output channels.
        kernel_size (int | tuple[int, int]): Kernel size.
        stride (int | tuple[int, int]): Stride. Defaults to 1.
        padding (int | tuple[int, int] | str): Padding; ``'valid'`` or
            ``'same'`` (stride 1 only) as in ``nn.Conv2d``. Defaults to 0.
        dilation (int | tuple[int, int]): Dilation. Defaults to 1.
        groups (int): Groups; must divide both channel counts. Defaults to 1.
        bias (bool): Whether to add a learnable bias. Defaults to True.
        padding_mode (str): One of ``'zeros'``, ``'reflect'``,
            ``'replicate'``, ``'circular'``. Defaults to ``'zeros'``.
    """

    transposed = False

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntOrPair,
                 stride: IntOrPair = 1,
                 padding: Union[IntOrPair, str] = 0,
                 dilation: IntOrPair = 1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros') -> None:
        super().__init__()
        for name, value in (('in_channels', in_channels), ('out_channels', out_channels),
                            ('groups', groups)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        if in_channels % groups or out_channels % groups:
            raise ValueError(f'groups={groups} must divide in_channels={in_channels} and '
                             f'out_channels={out_channels}')
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f'padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _check_positive_pair('kernel_size', kernel_size)
        self.stride = _check_positive_pair('stride', stride)
        self.dilation = _check_positive_pair('dilation', dilation)
        self.groups = groups
        self.padding_mode = padding_mode
        self.output_padding = (0, 0)
        self.padding = self._resolve_padding(padding)
        self.plain = False
        self.deploy = False

    # ------------------------------------------------------------------ padding
    def _resolve_padding(self, padding) -> Tuple[int, int]:
        """Turns ``padding`` into a pair; 'same' with an even receptive field
        is rejected (it needs asymmetric padding, which a pair cannot hold)."""
        if isinstance(padding, str):
            if padding == 'valid':
                return (0, 0)
            if padding != 'same':
                raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            if self.stride != (1, 1):
                raise ValueError("padding='same' requires stride=1 (as in nn.Conv2d)")
            total = [d * (k - 1) for k, d in zip(self.kernel_size, self.dilation)]
            if any(t % 2 for t in total):
                raise ValueError("padding='same' needs an odd effective kernel size here; "
                                 'pass an explicit padding instead')
            return tuple(t // 2 for t in total)
        return _check_positive_pair('padding', padding, allow_zero=True)

    @property
    def _reversed_padding_repeated_twice(self):
        # F.pad takes the last dimension first: (left, right, top, bottom).
        ph, pw = self.padding
        return (pw, pw, ph, ph)

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor,
                      bias: Optional[torch.Tensor]) -> torch.Tensor:
        """A conv with this layer's geometry and an arbitrary kernel (the same
        signature as ``nn.Conv2d._conv_forward``, which mmcv's efficient
        conv-bn eval path calls)."""
        if self.padding_mode != 'zeros':
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    # --------------------------------------------------------------- plain mode
    def _init_plain_conv(self, bias: bool) -> None:
        """Switches the layer to plain mode: ``weight``/``bias`` parameters of
        ``nn.Conv2d``'s shapes and initialisation."""
        self.plain = True
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self._parameters['weight'] = nn.Parameter(torch.empty(shape))
        self._init_bias(bias)
        self.reset_plain_parameters()

    def _init_bias(self, bias: bool) -> None:
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels))
        else:
            self.register_parameter('bias', None)

    def reset_plain_parameters(self) -> None:
        """``nn.Conv2d.reset_parameters`` on the plain weight and bias."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self._reset_default_bias()

    def _default_kernel(self, like: torch.Tensor) -> torch.Tensor:
        """A dense kernel ``(out, in // groups, kh, kw)`` drawn as
        ``nn.Conv2d.reset_parameters`` draws its weight (kaiming-uniform,
        ``a=sqrt(5)``), on ``like``'s device and dtype."""
        kernel = torch.empty(self.out_channels, self.in_channels // self.groups,
                             *self.kernel_size, device=like.device, dtype=like.dtype)
        return nn.init.kaiming_uniform_(kernel, a=math.sqrt(5))

    def _reset_default_bias(self) -> None:
        """``nn.Conv2d``'s default bias: uniform in ``+-1 / sqrt(fan_in)``."""
        if self.bias is not None:
            fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def _plain_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight, self.bias)

    # ----------------------------------------------------------- dense kernel
    def compute_weight(self) -> torch.Tensor:
        """The effective dense kernel ``(out, in // groups, kh, kw)`` in
        transform mode (differentiable)."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """PyTorch's default ``nn.Conv2d`` initialisation (what a stock conv
        starts with); factorised layers define its equivalent for their
        parameters and apply it in their constructor."""
        if self.plain:
            self.reset_plain_parameters()
            return
        raise NotImplementedError

    def _write_kernel(self, kernel: torch.Tensor) -> None:
        """Stores a dense kernel ``(out, in // groups, kh, kw)`` written into
        ``weight`` in the layer's parameters (transform mode); each layer
        documents its rule."""
        raise NotImplementedError(f'{type(self).__name__} cannot store a kernel written into '
                                  'its weight')

    def __getattr__(self, name: str):
        # `weight` is a real Parameter in plain / deploy mode and the composed
        # dense kernel otherwise; resolving it here (instead of a property)
        # keeps nn.Module's parameter registration untouched. In-place writes
        # to the composed kernel reach the parameters (see KernelView).
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == 'weight' and not self.__dict__.get('plain', True):
                weight = self.compute_weight()
                return weight if in_graph_transform() else kernel_view(self, weight)
            raise

    def __setattr__(self, name: str, value) -> None:
        if (name == 'weight' and not self.__dict__.get('plain', True)
                and 'weight' not in self._parameters):
            # `layer.weight = tensor` stores the kernel (a stray `weight`
            # Parameter would be ignored by the forward)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f'{type(self).__name__}.weight can only be assigned a tensor '
                                f'(stored into the factorised parameters), got '
                                f'{type(value).__name__}')
            with torch.no_grad():
                self._write_kernel(value.detach().clone())
            return
        super().__setattr__(name, value)

    def register_parameter(self, name: str, param: Optional[nn.Parameter]) -> None:
        """``nn.Module.register_parameter``; the composed kernel (a
        ``KernelView``, e.g. handed back by ``torch.nn.utils.prune``, which
        re-registers ``weight`` as ``weight_orig``) is refused with an error
        that says what works instead."""
        if isinstance(param, KernelView):
            own = ', '.join(n for n, _ in self.named_parameters())
            raise TypeError(
                f"{type(self).__name__}.weight is the kernel composed from the layer's own "
                f"parameters ({own}), not a Parameter, so it cannot be registered as "
                f"'{name}'. Reparametrisations of a conv's 'weight' (torch.nn.utils.prune, "
                'weight_norm, ...) need a stock conv: apply them to layer.to_plain_conv() (an '
                "equal nn.Conv2d) or to the layer's own parameters.")
        super().register_parameter(name, param)

    def __prepare_scriptable__(self):
        """``torch.jit.script`` calls this on every submodule before compiling;
        the layers' forwards are Python (kernel composition, custom autograd
        functions), so scripting stops here with an error that says what
        works instead."""
        raise RuntimeError(
            f'torch.jit.script cannot compile {type(self).__name__}: its forward composes the '
            'kernel in Python with custom autograd functions. Use torch.jit.trace, '
            'torch.compile or the ONNX export (tools/deploy/export_onnx.py), or script a model '
            'whose layers were replaced by layer.to_plain_conv() (an equal nn.Conv2d).')

    # ----------------------------------------------------------------- deploy
    def to_plain_conv(self) -> nn.Conv2d:
        """A new ``nn.Conv2d`` computing the same function, holding the
        effective kernel (detached copies)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, self.groups, self.bias is not None,
                         self.padding_mode)
        weight = self.weight if self.plain else self.compute_weight()
        conv = conv.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        conv.train(self.training)
        return conv

    def switch_to_deploy(self) -> nn.Module:
        """Converts the layer to its inference form and returns the module a
        parent should hold from now on (``self`` or a replacement).

        The default, used in plain mode, returns an equal ``nn.Conv2d`` so the
        deployed model holds stock modules with stock state-dict keys.
        """
        if self.plain:
            return self.to_plain_conv()
        return self

    def extra_repr(self) -> str:
        s = (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
             f'stride={self.stride}, padding={self.padding}')
        if self.dilation != (1, 1):
            s += f', dilation={self.dilation}'
        if self.groups != 1:
            s += f', groups={self.groups}'
        if self.bias is None:
            s += ', bias=False'
        if self.padding_mode != 'zeros':
            s += f', padding_mode={self.padding_mode}'
        if self.plain:
            s += ', plain=True'
        if self.deploy:
            s += ', deploy=True'
        return s
