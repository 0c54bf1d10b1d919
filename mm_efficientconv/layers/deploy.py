# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Kept for compatibility: the deploy protocol lives in
:mod:`mm_efficientconv.deploy` (``switch_to_deploy``, ``count_deployable``,
``fold_model``).

The names resolve lazily, on first access, so that importing the layers
imports nothing else from the package.
"""
import importlib

_NAMES = ('switch_to_deploy', 'count_deployable', 'fold_model')
__all__ = list(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module('mm_efficientconv.deploy.convert'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
