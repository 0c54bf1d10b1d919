# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""A hook that opens the composed-kernel cache scope around validation and
test loops."""
import contextlib
from typing import Optional

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from mm_efficientconv.layers.kernel_cache import cached_kernels


@HOOKS.register_module()
class KernelCacheHook(Hook):
    """Evaluates the factorised layers (``DOConv``, ``MixConv``,
    ``MixGroupedPointwise``) at the cost of plain convs during validation and
    testing: opens a :func:`~mm_efficientconv.layers.cached_kernels` scope at
    ``before_val_epoch`` / ``before_test_epoch`` and closes it at
    ``after_val_epoch`` / ``after_test_epoch``, so each layer composes its
    kernel once per loop instead of at every forward.

    Training is untouched (outside a scope nothing is cached, and a scope
    never caches where a gradient is needed). The parameters must not change
    during the loop; hooks that swap weights (mmengine's ``EMAHook``) do so
    before the first forward of the loop and after the last one, which is
    safe in either hook order.

    Example:
        >>> custom_hooks = [dict(type='KernelCacheHook')]
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self._scope: Optional[contextlib.ExitStack] = None

    def _open(self) -> None:
        self._close()
        self._scope = contextlib.ExitStack()
        self._scope.enter_context(cached_kernels())

    def _close(self) -> None:
        if self._scope is not None:
            scope, self._scope = self._scope, None
            scope.close()

    def before_val_epoch(self, runner) -> None:
        self._open()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._close()

    def before_test_epoch(self, runner) -> None:
        self._open()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._close()

    def after_run(self, runner) -> None:
        self._close()  # a loop that raised left its scope open
