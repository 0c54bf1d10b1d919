# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Deploy: the inference form of a model, and the files that carry it.

* :mod:`.convert` — the ``switch_to_deploy()`` protocol (:func:`switch_to_deploy`,
  :func:`fold_model`) and :func:`cpu_copy`;
* :mod:`.stock` — building / probing models of configs and the stock-config
  check (runs without the plugin imported);
* :mod:`.checkpoint` — deploy checkpoints (weights-only loadable, atomic);
* :mod:`.fold` — :func:`fold_checkpoint` (``tools/deploy/fold_checkpoint.py``);
* :mod:`.onnx_export` — :func:`export_onnx` (``tools/deploy/export_onnx.py``).

The deploy hook, the tools, the benchmark and the demo all go through
:func:`switch_to_deploy`. Nothing here imports the layers (the protocol is
duck-typed), onnx or a codebase at import time.
"""
from .checkpoint import (atomic_torch_save, cpu_state_dict, deploy_checkpoint, plain_meta,
                         save_deploy_checkpoint)
from .convert import count_deployable, cpu_copy, fold_model, switch_to_deploy
from .fold import DeployCheckError, fold_checkpoint
from .onnx_export import ExportWrapper, export_onnx, op_histogram
from .stock import (build_model, deployed_outputs, exports_features, flatten_outputs, is_classifier,
                    max_abs_diff, num_params, probe_forward, probe_shape, run_stock_check, stock_check)

__all__ = [
    'switch_to_deploy', 'count_deployable', 'fold_model', 'cpu_copy',
    'plain_meta', 'atomic_torch_save', 'cpu_state_dict', 'deploy_checkpoint', 'save_deploy_checkpoint',
    'fold_checkpoint', 'DeployCheckError', 'export_onnx', 'ExportWrapper', 'op_histogram',
    'build_model', 'is_classifier', 'exports_features', 'flatten_outputs', 'deployed_outputs',
    'probe_forward', 'probe_shape', 'max_abs_diff', 'num_params', 'stock_check', 'run_stock_check'
]
