# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The few fixes the pinned stack needs, each applied only where it is needed.

:func:`apply` runs on ``import mm_efficientconv``; it imports neither mmdet
nor mmseg (an mmdet that rejects the installed mmcv does not break the
plugin): fixes of a codebase wait until that codebase's module is imported.

Resuming under torch >= 2.6 (``torch.load(weights_only=True)`` by default)
------------------------------------------------------------------------
mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; its own
training checkpoints hold, besides tensors, the message hub's
``HistoryBuffer`` objects, numpy arrays/scalars/dtypes, ``collections.Counter``
(scheduler milestones) and, inside each ``HistoryBuffer``, references to its
statistics methods, which pickle as ``getattr(HistoryBuffer, 'mean')``.
Instead of switching the safe loader off, we allow-list exactly these
classes, and map the ``getattr`` global to :func:`_restricted_getattr`, which
only resolves public attributes of the allow-listed mmengine classes (a general
``getattr`` would make the safe loader unsafe: it reaches any callable).

Distributed training without a GPU (CI, laptops)
------------------------------------------------
mmengine 0.10.7's ``pytorch`` launcher calls ``torch.cuda.set_device`` even
for the ``gloo`` backend, and the Runner's default DDP wrapper passes
``device_ids=[LOCAL_RANK]``, which torch rejects for CPU modules. Where no GPU
is visible we initialise the process group without touching CUDA and give CPU
modules ``device_ids=None``. The patch is installed only where no GPU is
visible at import (``torch.cuda.is_available()`` is false, e.g. with
``CUDA_VISIBLE_DEVICES=''``), and even then steps aside for CUDA modules.
:func:`init_distributed` is the one place the package starts a process group
itself (the dry run, before its Runner exists).

mmdet 3.3.0's ``SSDHead`` cannot predict
---------------------------------------
``SSDHead`` never sets ``loss_cls``, which the shared ``AnchorHead``
prediction path reads, so every SSD / SSDLite validation raises
``AttributeError`` (open-mmlab/mmdetection issues 11305 and 11780, fix never
released). Setting the class attribute to ``None`` restores the softmax
branch the head used before 3.3. Applied when ``mmdet.models.dense_heads.ssd_head``
is imported (a one-shot post-import hook), or at once if it already is.

mmpretrain 1.2 imports mmdet as a side effect
---------------------------------------------
``mmpretrain.models`` (which our backbones build on) imports
``mmpretrain.models.utils.res_layer_extra_norm``, which tries
``from mmdet.models.backbones import ResNet`` to register mmpretrain's
``ResLayerExtraNorm`` in mmdet's registry. That imports all of mmdet's models
and, where mmdet rejects the installed mmcv (an ``AssertionError``, not the
``ImportError`` mmpretrain catches), makes the import fail. While the package
imports (:func:`codebases_deferred`), imports of mmdet/mmseg that are not
loaded yet raise ``ImportError``, so mmpretrain skips that integration; it is
re-run as soon as ``mmdet.models`` is imported by anyone, so
``ResLayerExtraNorm`` is registered exactly where it would have been.
"""
import collections
import contextlib
import importlib
import importlib.abc
import pickle
import sys
from typing import Any, Callable, List

import numpy as np
import torch

_GETATTR_OWNERS: List[type] = []


def _restricted_getattr(obj: Any, name: str, *default):
    """``getattr`` limited to public attributes of allow-listed classes."""
    if any(obj is owner for owner in _GETATTR_OWNERS) and isinstance(name, str) \
            and not name.startswith('_'):
        return getattr(obj, name, *default)
    raise pickle.UnpicklingError(
        f'mm_efficientconv safe loading refuses getattr({obj!r}, {name!r}): only public '
        f'attributes of {[c.__name__ for c in _GETATTR_OWNERS]} may be resolved from a '
        'checkpoint. If you trust this file, load it with torch.load(..., weights_only=False).')


def _numpy_safe_globals() -> list:
    items: list = [np.ndarray, np.dtype]
    # numpy >= 2 moved the pickling helpers to numpy._core; checkpoints written
    # with numpy 1.x name numpy.core. Register both names where they exist.
    for module_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            module = __import__(module_name, fromlist=['_reconstruct', 'scalar'])
        except ImportError:  # pragma: no cover - depends on numpy version
            continue
        items.append((module._reconstruct, f'{module_name}._reconstruct'))
        items.append((module.scalar, f'{module_name}.scalar'))
    # numpy >= 1.25 pickles dtypes through their classes (numpy.dtypes.Float64DType, ...).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        items.extend(getattr(dtypes, name) for name in dir(dtypes) if name.endswith('DType'))
    return items


def allow_mmengine_checkpoints_in_safe_loading() -> None:
    """Allow-lists what mmengine's training checkpoints contain for torch's
    ``weights_only`` loader. Idempotent."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:  # torch < 2.4: no safe-global registry, nothing to do
        return
    from mmengine.logging.history_buffer import HistoryBuffer
    if HistoryBuffer not in _GETATTR_OWNERS:
        _GETATTR_OWNERS.append(HistoryBuffer)
    add_safe_globals([
        HistoryBuffer,
        collections.Counter,
        collections.OrderedDict,
        (_restricted_getattr, 'builtins.getattr'),
        (_restricted_getattr, '__builtin__.getattr'),
        *_numpy_safe_globals(),
    ])


def allow_cpu_distributed() -> None:
    """Lets ``tools/dist_train.sh`` (torchrun + mmengine's pytorch launcher)
    run on machines without a GPU, with the ``gloo`` backend: mmengine's
    pytorch launcher skips ``torch.cuda.set_device`` and
    ``MMDistributedDataParallel`` drops ``device_ids`` for CPU modules, while
    no GPU is available. Idempotent."""
    from mmengine.dist import utils as dist_utils
    from mmengine.model import MMDistributedDataParallel

    launcher = dist_utils._init_dist_pytorch
    if not getattr(launcher, '_mm_efficientconv_cpu', False):

        def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
            if torch.cuda.is_available() or init_backend != 'torch':
                return launcher(backend, init_backend=init_backend, **kwargs)
            # what mmengine does, minus torch.cuda.set_device(LOCAL_RANK)
            torch.distributed.init_process_group(backend=backend, **kwargs)

        _init_dist_pytorch._mm_efficientconv_cpu = True
        dist_utils._init_dist_pytorch = _init_dist_pytorch

    ddp_init = MMDistributedDataParallel.__init__
    if not getattr(ddp_init, '_mm_efficientconv_cpu', False):

        def __init__(self, module, detect_anomalous_params=False, **kwargs):
            on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
            if on_cpu and not torch.cuda.is_available() and kwargs.get('device_ids') is not None:
                kwargs['device_ids'] = None  # torch rejects device_ids for CPU modules
            ddp_init(self, module, detect_anomalous_params=detect_anomalous_params, **kwargs)

        __init__._mm_efficientconv_cpu = True
        MMDistributedDataParallel.__init__ = __init__


def init_distributed(launcher: str, backend: str = None) -> None:
    """Initialises the default process group through mmengine's launcher
    (``mmengine.dist.init_dist``), as the Runner would, unless one exists.

    Args:
        launcher (str): ``'pytorch'`` (torchrun), ``'slurm'`` or ``'mpi'``.
        backend (str, optional): Defaults to None: ``'nccl'`` where a GPU is
            available, else ``'gloo'`` (with the CPU launcher of
            :func:`allow_cpu_distributed`).
    """
    import torch.distributed as torch_dist
    from mmengine.dist import init_dist
    if torch_dist.is_available() and torch_dist.is_initialized():
        return
    cuda = torch.cuda.is_available()
    if not cuda:
        allow_cpu_distributed()
    init_dist(launcher, backend=backend or ('nccl' if cuda else 'gloo'))


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs ``callback(module)`` right after the module ``name`` is executed,
    once; the module is found and loaded by the regular finders."""

    def __init__(self, name: str, callback: Callable) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, 'find_spec', None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
            spec.loader = _CallbackLoader(spec.loader, self)
        return spec

    def done(self, module) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        self.callback(module)


class _CallbackLoader(importlib.abc.Loader):
    """Delegates to ``loader``; tells ``finder`` when the module ran."""

    def __init__(self, loader, finder: _PostImportFinder) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._finder.done(module)

    def __getattr__(self, name):  # get_source, get_filename, ... for tracebacks and inspect
        return getattr(self._loader, name)


def when_imported(name: str, callback: Callable) -> None:
    """Calls ``callback(module)`` as soon as the module ``name`` is imported:
    at once if it already is, else right after its first import (which this
    does not trigger)."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    if not any(isinstance(f, _PostImportFinder) and f.name == name and f.callback is callback
               for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder(name, callback))


# codebases the package never imports itself, and the optional integrations of its
# dependencies that import one of them at import time: module -> codebase module that
# re-runs it
OPTIONAL_CODEBASES = ('mmdet', 'mmseg')
DEFERRED_INTEGRATIONS = {'mmpretrain.models.utils.res_layer_extra_norm': 'mmdet.models'}


class _CodebaseBlocker(importlib.abc.MetaPathFinder):
    """Raises ``ImportError`` for the codebases in ``names``."""

    def __init__(self, names) -> None:
        self.names = tuple(names)

    def find_spec(self, fullname, path, target=None):
        if fullname.split('.')[0] in self.names:
            raise ImportError(f'{fullname} is not imported while mm_efficientconv imports '
                              '(mm_efficientconv.compat.codebases_deferred)', name=fullname)
        return None


def _rerun(name: str) -> Callable:

    def rerun(_module) -> None:
        if name not in sys.modules:
            importlib.import_module(name)

    return rerun


@contextlib.contextmanager
def codebases_deferred():
    """Within the block, importing mmdet or mmseg (where not imported yet)
    raises ``ImportError``; integrations of :data:`DEFERRED_INTEGRATIONS` that
    ran without the codebase are re-run once it is imported."""
    blocked = [name for name in OPTIONAL_CODEBASES if name not in sys.modules]
    if not blocked:
        yield
        return
    loaded_before = {name for name in DEFERRED_INTEGRATIONS if name in sys.modules}
    blocker = _CodebaseBlocker(blocked)
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)
        for name, trigger in DEFERRED_INTEGRATIONS.items():
            if name in sys.modules and name not in loaded_before \
                    and trigger.split('.')[0] in blocked:
                del sys.modules[name]  # its next import (or the trigger's) runs it again
                when_imported(trigger, _rerun(name))


def _fix_ssd_head(module) -> None:
    ssd_head = getattr(module, 'SSDHead', None)
    if ssd_head is not None and not hasattr(ssd_head, 'loss_cls'):
        ssd_head.loss_cls = None


def fix_mmdet_ssd_head() -> None:
    """Gives mmdet's ``SSDHead`` the ``loss_cls = None`` its predict path
    needs (mmdet 3.3.0) once mmdet's ``ssd_head`` module is imported; does
    not import mmdet. No-op where the attribute exists."""
    when_imported('mmdet.models.dense_heads.ssd_head', _fix_ssd_head)


def register_config_prefix() -> None:
    """Makes ``_base_ = 'mm_efficientconv::<folder>/<config>.py'`` resolve to the
    installed package's ``.mim/configs`` (as ``mmdet::`` does).

    mmengine 0.10.7 only resolves the prefixes listed in
    ``mmengine.config.utils.MODULE2PACKAGE``, and ties every top-level dict
    of a ``pkg::`` base to a registry scope named ``pkg``. Our configs are
    configs of mmpretrain / mmdet / mmseg (their ``default_scope``) whose
    components are registered in mmengine's root registries, so a base from
    this package gets no scope of its own: its dicts resolve in the
    codebase's scope, and the bases it inherits keep theirs (``mmdet::`` ...).
    """
    from mmengine.config import Config
    from mmengine.config import utils as config_utils
    config_utils.MODULE2PACKAGE.setdefault('mm_efficientconv', 'mm_efficientconv')
    get_cfg_path = Config._get_cfg_path
    if getattr(get_cfg_path, '_mm_efficientconv', False):
        return

    def _get_cfg_path(cfg_path, filename):
        path, scope = get_cfg_path(cfg_path, filename)
        return path, (None if scope == 'mm_efficientconv' else scope)

    _get_cfg_path._mm_efficientconv = True
    Config._get_cfg_path = staticmethod(_get_cfg_path)


def apply() -> None:
    """Applies every compatibility fix of the package, each only where it is
    needed: the safe-loading allow-list always, the CPU distributed launcher
    only without a visible GPU, the mmdet fix when mmdet's module loads, the
    ``mm_efficientconv::`` config prefix always."""
    allow_mmengine_checkpoints_in_safe_loading()
    register_config_prefix()
    if not torch.cuda.is_available():
        allow_cpu_distributed()
    fix_mmdet_ssd_head()
