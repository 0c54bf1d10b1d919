# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Export the deploy (folded) form of a model to ONNX and verify it with
onnxruntime.

Builds the model of CONFIG, loads CHECKPOINT, folds it with
``switch_to_deploy`` (optionally fusing conv + BN) and exports

* for classifiers: ``forward(x, mode='tensor')``, i.e. the logits;
* for detectors and segmentors: ``extract_feat(x)``, the backbone (+ neck)
  feature maps (heads with data-dependent post-processing are not exported).

The exported graph is run with onnxruntime on a random probe batch and
compared with PyTorch; the tool exits non-zero (and writes nothing) if the
largest absolute difference exceeds ``--tol``. It prints the ONNX operator
histogram: a folded DO-Conv or MixConv model holds only standard ``Conv``
nodes (no ``Einsum``, no ``Split``/``Concat`` of kernel groups).

OUT is written atomically (temporary file + ``os.replace``) and an existing
OUT is only replaced with ``--force``.

Example:
    python tools/deploy/export_onnx.py CONFIG ckpt.pth model.onnx --shape 224 224
"""
import argparse
import collections
import os
import os.path as osp
import sys
from typing import List

import torch
import torch.nn as nn

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from fold_checkpoint import (build_model, flatten_outputs, is_classifier,  # noqa: E402
                             max_abs_diff, probe_shape)


class ExportWrapper(nn.Module):
    """What is exported: the classifier's logits or the detector's/segmentor's
    ``extract_feat`` outputs, as a flat tuple of tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.classifier = is_classifier(model) or not callable(
            getattr(model, 'extract_feat', None))

    def forward(self, x: torch.Tensor):
        out = self.model(x, mode='tensor') if self.classifier else self.model.extract_feat(x)
        return tuple(flatten_outputs(out))


def op_histogram(onnx_model) -> collections.Counter:
    """Counts the node types of the graph and of every subgraph."""
    counter = collections.Counter()

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


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Export the folded model to ONNX')
    parser.add_argument('config', help='config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint (training or folded)')
    parser.add_argument('out', help='output .onnx file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: from the config pipelines; 256x256 for '
                        'detectors/segmentors)')
    parser.add_argument('--batch', type=int, default=1, help='batch size (default: 1)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (default: 17)')
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='fuse every conv with its following BN before exporting')
    parser.add_argument('--dynamic-batch', action='store_true',
                        help='export with a dynamic batch dimension')
    parser.add_argument('--tol', type=float, default=1e-4,
                        help='largest allowed |onnxruntime - PyTorch| difference (default: 1e-4)')
    parser.add_argument('--force', action='store_true', help='overwrite an existing OUT')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of CONFIG, as key=value pairs')
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f'--batch must be >= 1, got {args.batch}')
    if args.opset < 11:
        parser.error(f'--opset must be >= 11, got {args.opset}')
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint not found: {args.checkpoint}')
    if osp.exists(args.out) and not args.force:
        parser.error(f'{args.out} exists; pass --force to overwrite it')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import mm_efficientconv  # noqa: F401  (registries and compat fixes)
    import onnx
    import onnxruntime as ort
    from mmengine.runner import load_checkpoint

    from mm_efficientconv.hooks.deploy import fold_model

    model, cfg = build_model(args.config, args.cfg_options)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True, logger='silent')
    model.eval()
    shape = probe_shape(cfg, model, args.batch, args.shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    wrapper = ExportWrapper(model).eval()
    with torch.no_grad():
        reference = [t.float() for t in wrapper(x)]
    model, folded = fold_model(model, args.fuse_conv_bn)
    wrapper = ExportWrapper(model).eval()
    with torch.no_grad():
        expected = [t.float() for t in wrapper(x)]
    fold_diff = max_abs_diff(reference, expected)

    output_names = ['logits'] if wrapper.classifier and len(expected) == 1 else [
        f'feat{i}' for i in range(len(expected))]
    dynamic_axes = None
    if args.dynamic_batch:
        dynamic_axes = {name: {0: 'batch'} for name in ['input'] + output_names}

    out = osp.abspath(args.out)
    os.makedirs(osp.dirname(out), exist_ok=True)
    tmp = f'{out}.tmp.{os.getpid()}'
    try:
        with torch.no_grad():
            torch.onnx.export(wrapper, (x, ), tmp, input_names=['input'],
                              output_names=output_names, opset_version=args.opset,
                              dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)
        onnx_model = onnx.load(tmp)
        onnx.checker.check_model(onnx_model)
        histogram = op_histogram(onnx_model)

        session = ort.InferenceSession(tmp, providers=['CPUExecutionProvider'])
        results: List = session.run(None, {'input': x.numpy()})
        ort_diff = max_abs_diff([torch.from_numpy(r).float() for r in results], expected)

        print(f'config:          {args.config}')
        print(f'checkpoint:      {args.checkpoint}')
        print(f'exported:        {"logits" if wrapper.classifier else "extract_feat"} '
              f'{[tuple(t.shape) for t in expected]} for input {tuple(shape)}, opset {args.opset}')
        print(f'layers folded:   {folded}' + (' (+ conv-BN fusion)' if args.fuse_conv_bn else ''))
        print(f'max |folded - original| (PyTorch): {fold_diff:.3e}')
        print(f'max |onnxruntime - PyTorch|:       {ort_diff:.3e}')
        print('ONNX ops:        ' + ', '.join(f'{op}: {n}' for op, n in sorted(histogram.items())))
        if 'Einsum' in histogram:
            print('WARNING: the graph contains Einsum nodes (an unfolded over-parameterised '
                  'conv?)', file=sys.stderr)
        if not ort_diff <= args.tol:
            print(f'ERROR: onnxruntime differs from PyTorch by {ort_diff:.3e} > {args.tol:g}; '
                  'nothing written', file=sys.stderr)
            return 1
        os.replace(tmp, out)
        print(f'saved:           {args.out}')
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return 0


if __name__ == '__main__':
    sys.exit(main())
