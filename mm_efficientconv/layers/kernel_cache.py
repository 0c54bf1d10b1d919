# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The one composed-kernel cache of the package: explicit and scoped.

Layers that compose a kernel from their parameters (``DOConv``'s ``W`` and
``D``, ``MixConv``'s zero-padded group kernels, ``MixGroupedPointwise``'s
concatenated parts) compose it at every forward. Inside a
:func:`cached_kernels` scope, in the spirit of
``torch.nn.utils.parametrize.cached()``, each layer composes its kernel once
and reuses it while no gradient is needed; leaving the outermost scope drops
everything. Outside a scope nothing is ever cached, so a layer's output is
always a function of its current parameters, whoever writes them and however
(``.data`` writes of EMA / momentum / teacher models included).

Inside a scope the parameters are assumed not to change. As a safety net an
entry is also keyed by each source parameter's ``_version``, ``data_ptr``,
device and dtype, which catches in-place updates made under ``no_grad``
(optimiser steps, ``load_state_dict``) and ``.to()``; writes through
``param.data`` are not seen, so do not write parameters through ``.data``
inside a scope. Caching is bypassed while a gradient is needed, while tracing
or scripting with ``torch.jit``, exporting to ONNX, compiling with
``torch.compile`` and under ``torch.func`` transforms.

``KernelCacheHook`` (``mm_efficientconv.hooks``) opens a scope around the
validation and test loops of an mmengine ``Runner``.
"""
import contextlib
from typing import Callable, Dict, Hashable, Iterator, Optional, Sequence, Tuple

import torch

from mm_efficientconv.layers.utils import in_graph_transform

_scope_depth = 0
_entries: Dict[Tuple[int, Hashable], tuple] = {}


@contextlib.contextmanager
def cached_kernels() -> Iterator[None]:
    """A context manager inside which every layer of this package composes its
    kernel once and reuses it (only where no gradient is needed); everything
    is dropped when the outermost scope exits. Scopes nest.

    Example:
        >>> from mm_efficientconv.layers import cached_kernels
        >>> model.eval()
        >>> with torch.no_grad(), cached_kernels():
        ...     for x in loader:
        ...         model(x)  # each DOConv composes its kernel once
    """
    global _scope_depth
    _scope_depth += 1
    try:
        yield
    finally:
        _scope_depth -= 1
        if _scope_depth == 0:
            _entries.clear()


def kernel_cache_active() -> bool:
    """Whether a :func:`cached_kernels` scope is open."""
    return _scope_depth > 0


def _key(sources: Sequence[torch.Tensor]) -> tuple:
    return tuple((t._version, t.data_ptr(), t.device, t.dtype) for t in sources)


def cached_kernel(module: torch.nn.Module,
                  sources: Sequence[torch.Tensor],
                  compose: Callable[[], torch.Tensor],
                  tag: Hashable = 'weight') -> torch.Tensor:
    """``compose()``, reused within the current :func:`cached_kernels` scope.

    Composes afresh (and caches nothing) outside a scope, when a gradient is
    needed (grad mode on and a source requires grad), or under a graph
    transform (tracing, scripting, ONNX export, compiling, ``torch.func``:
    :func:`~mm_efficientconv.layers.utils.in_graph_transform`).

    Args:
        module (nn.Module): The layer that owns the kernel.
        sources (Sequence[Tensor]): The parameters the kernel is composed
            from (their versions are part of the key).
        compose (Callable[[], Tensor]): Composes the kernel.
        tag (Hashable): Distinguishes several kernels of one layer.
            Defaults to ``'weight'``.

    Returns:
        Tensor: The kernel (a cached one never carries an autograd graph).
    """
    if (_scope_depth == 0 or in_graph_transform()
            or (torch.is_grad_enabled() and any(t.requires_grad for t in sources))):
        return compose()
    slot = (id(module), tag)
    key = _key(sources)
    entry: Optional[tuple] = _entries.get(slot)
    if entry is not None and entry[0] is module and entry[1] == key:
        return entry[2]
    if torch.is_inference_mode_enabled():
        # a normal tensor, so that it may later be used with autograd on
        with torch.inference_mode(False), torch.no_grad():
            kernel = compose()
    else:
        with torch.no_grad():
            kernel = compose()
    _entries[slot] = (module, key, kernel)
    return kernel
