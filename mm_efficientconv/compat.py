# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The few fixes the pinned stack needs. Applied once, on ``import mm_efficientconv``.

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
modules ``device_ids=None``. With a GPU, nothing changes.

mmdet 3.3.0's ``SSDHead`` cannot predict
---------------------------------------
``SSDHead`` never sets ``loss_cls``, which the shared ``AnchorHead``
prediction path reads, so every SSD / SSDLite validation raises
``AttributeError`` (open-mmlab/mmdetection issues 11305 and 11780, fix never
released). Setting the class attribute to ``None`` restores the softmax
branch the head used before 3.3.
"""
import collections
import pickle
from typing import Any, List

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
    run on machines without a GPU, with the ``gloo`` backend. Idempotent."""
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


def fix_mmdet_ssd_head() -> None:
    """Gives mmdet's ``SSDHead`` the ``loss_cls = None`` its predict path
    needs (mmdet 3.3.0). No-op without mmdet or where the attribute exists."""
    try:
        from mmdet.models.dense_heads.ssd_head import SSDHead
    except ImportError:
        return
    if not hasattr(SSDHead, 'loss_cls'):
        SSDHead.loss_cls = None


def apply() -> None:
    """Applies every compatibility fix of the package."""
    allow_mmengine_checkpoints_in_safe_loading()
    allow_cpu_distributed()
    fix_mmdet_ssd_head()
