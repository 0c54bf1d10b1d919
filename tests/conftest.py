# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Fixtures shared by the whole suite (one home; test files do not re-declare them).

- ``one_thread``: tiny models on a busy 2-core machine run faster with one
  intra-op thread; restores the previous count afterwards. Use it as
  ``pytestmark = pytest.mark.usefixtures('one_thread')`` in a module.
- ``codebase_scope``: a context-manager factory, ``with codebase_scope('mmdet'):``
  registers the codebase's modules (without changing the global default
  scope) and makes it the default scope inside the block, as a config whose
  ``default_scope`` is that codebase would.
- ``mmpretrain_scope`` / ``mmdet_scope`` / ``mmseg_scope``: the same, as
  fixtures held for one test.
- ``repo_root``: the repository root (configs/, tools/).
"""
import contextlib
import importlib
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope='module')
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def _codebase_scope(codebase):
    """Register ``codebase`` (mmpretrain / mmdet / mmseg) and make it the default
    scope for the block; skips the test when the codebase is not installed."""
    from mmengine.registry import DefaultScope
    pytest.importorskip(codebase)
    utils = importlib.import_module(f'{codebase}.utils')
    utils.register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(codebase):
        yield


@pytest.fixture
def codebase_scope():
    return _codebase_scope


@pytest.fixture
def mmpretrain_scope():
    with _codebase_scope('mmpretrain'):
        yield


@pytest.fixture
def mmdet_scope():
    with _codebase_scope('mmdet'):
        yield


@pytest.fixture
def mmseg_scope():
    with _codebase_scope('mmseg'):
        yield
