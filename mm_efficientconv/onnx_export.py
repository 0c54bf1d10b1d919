# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Deprecated: ONNX export lives in :mod:`mm_efficientconv.deploy`
(``from mm_efficientconv.deploy import export_onnx``). This module re-exports
its names for one release."""
import warnings

from mm_efficientconv.deploy.onnx_export import ExportWrapper, export_onnx, op_histogram
from mm_efficientconv.deploy.stock import flatten_outputs, is_classifier

warnings.warn('mm_efficientconv.onnx_export is deprecated; import export_onnx (and the other '
              'names) from mm_efficientconv.deploy', DeprecationWarning, stacklevel=2)

__all__ = ['ExportWrapper', 'export_onnx', 'op_histogram', 'flatten_outputs', 'is_classifier']
