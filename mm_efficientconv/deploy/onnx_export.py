# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""ONNX export of a model's deploy form, verified with onnxruntime.

What is exported: for an mmpretrain classifier ``forward(x, mode='tensor')``
(the logits), for detectors and segmentors ``extract_feat(x)`` (backbone +
neck features; heads with data-dependent post-processing are not exported).
The export works on a CPU copy: the caller's model (on any device) is never
moved, converted or switched to eval mode.
"""
import collections
import os
import os.path as osp
import warnings
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

from .convert import cpu_copy, fold_model
from .stock import deployed_outputs, exports_features, max_abs_diff


class ExportWrapper(nn.Module):
    """The exported function: the classifier's logits or the detector's /
    segmentor's ``extract_feat`` outputs, as a flat tuple of tensors.

    Args:
        model (nn.Module): An mmpretrain classifier, mmdet detector or mmseg
            segmentor.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.classifier = not exports_features(model)

    def forward(self, x: torch.Tensor):
        return tuple(deployed_outputs(self.model, x))


def op_histogram(onnx_model) -> collections.Counter:
    """Counts the node types of an ONNX graph and of every subgraph."""
    counter: collections.Counter = collections.Counter()

    def visit(graph):
        for node in graph.node:
            counter[node.op_type] += 1
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(onnx_model.graph)
    return counter


def export_onnx(model: nn.Module,
                out: str,
                input_shape: Sequence[int],
                opset: int = 17,
                fold: bool = True,
                fuse_conv_bn: bool = False,
                dynamic_batch: bool = False,
                tol: float = 1e-4,
                force: bool = False,
                seed: int = 0,
                probe: Optional[torch.Tensor] = None) -> Dict:
    """Exports a CPU copy of ``model`` (folded first unless ``fold=False``) to
    ``out`` and checks onnxruntime against PyTorch on a probe input.

    The file is written atomically and only if the check passes. ``model``
    itself is left as it is (device, parameters, training mode).

    Args:
        model (nn.Module): An mmpretrain classifier, mmdet detector or mmseg
            segmentor, on any device.
        out (str): Path of the ``.onnx`` file.
        input_shape (Sequence[int]): ``(N, C, H, W)`` of the probe input.
        opset (int): ONNX opset. Defaults to 17.
        fold (bool): Fold the copy first (``fold_model``:
            ``switch_to_deploy``). Defaults to True.
        fuse_conv_bn (bool): Also fuse conv + BN with mmcv's ``fuse_conv_bn``
            when folding. Defaults to False.
        dynamic_batch (bool): Export a dynamic batch dimension. Defaults to
            False.
        tol (float): Largest allowed difference between onnxruntime and
            PyTorch, relative to ``max(1, max |output|)`` (so large logits are
            judged by float32 resolution). Defaults to 1e-4.
        force (bool): Overwrite an existing ``out``. Defaults to False.
        seed (int): Seed of the random probe input. Defaults to 0.
        probe (Tensor, optional): A real (preprocessed) input batch to probe
            with instead of random data; ``input_shape`` is then ignored.
            Defaults to None.

    Returns:
        dict: ``max_abs_diff`` (onnxruntime vs PyTorch), ``fold_abs_diff``
        (folded vs original PyTorch), ``folded`` (modules converted),
        ``ops`` (operator histogram), ``outputs`` (shapes), ``path``, ...

    Raises:
        ValueError: ``tol < 0`` or ``input_shape`` is not ``(N, C, H, W)``.
        FileExistsError: ``out`` exists and ``force`` is False.
        RuntimeError: onnxruntime differs from PyTorch by more than ``tol``.
    """
    import onnx
    import onnxruntime as ort

    if not tol >= 0:
        raise ValueError(f'tol must be >= 0, got {tol!r}')
    if probe is None and len(input_shape) != 4:
        raise ValueError(f'input_shape must be (N, C, H, W), got {tuple(input_shape)}')
    out = osp.abspath(out)
    if osp.exists(out) and not force:
        raise FileExistsError(f'{out} exists; pass force=True to overwrite it')
    if probe is not None:
        x = probe.detach().float().cpu()
    else:
        x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(seed))
    model = cpu_copy(model).eval()
    with torch.no_grad():
        reference = [t.float() for t in ExportWrapper(model)(x)]
    model, folded = fold_model(model, fuse_conv_bn) if fold else (model, 0)
    wrapper = ExportWrapper(model).eval()
    with torch.no_grad():
        expected = [t.float() for t in wrapper(x)]
    fold_diff = max_abs_diff(reference, expected)

    output_names = ['logits'] if wrapper.classifier and len(expected) == 1 else [
        f'feat{i}' for i in range(len(expected))]
    dynamic_axes = {n: {0: 'batch'} for n in ['input'] + output_names} if dynamic_batch else None
    os.makedirs(osp.dirname(out), exist_ok=True)
    tmp = f'{out}.tmp.{os.getpid()}'
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter on purpose: torch's default (dynamo) exporter needs onnxscript.
            warnings.filterwarnings('ignore', 'You are using the legacy TorchScript-based ONNX',
                                    DeprecationWarning)
            torch.onnx.export(wrapper, (x, ), tmp, input_names=['input'], output_names=output_names,
                              opset_version=opset, dynamic_axes=dynamic_axes,
                              do_constant_folding=True, dynamo=False)
        onnx_model = onnx.load(tmp)
        onnx.checker.check_model(onnx_model)
        session = ort.InferenceSession(tmp, providers=['CPUExecutionProvider'])
        results = session.run(None, {'input': x.numpy()})
        ort_diff = max_abs_diff([torch.from_numpy(r) for r in results], expected)
        scale = max(1.0, max(t.abs().max().item() for t in expected))
        if not ort_diff <= tol * scale:
            raise RuntimeError(f'onnxruntime differs from PyTorch by {ort_diff:.3e} > '
                               f'{tol:g} x {scale:.3g} (tol x max(1, max |output|)); nothing written')
        os.replace(tmp, out)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return dict(path=out, max_abs_diff=ort_diff, output_scale=scale, fold_abs_diff=fold_diff, folded=folded,
                ops=dict(sorted(op_histogram(onnx_model).items())),
                outputs=[tuple(t.shape) for t in expected], classifier=wrapper.classifier,
                input_shape=tuple(x.shape), opset=opset)
