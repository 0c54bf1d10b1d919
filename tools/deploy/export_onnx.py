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
OUT is only replaced with ``--force``. The work is done by
:func:`mm_efficientconv.deploy.export_onnx`; this is its command line.

Example:
    python tools/deploy/export_onnx.py CONFIG ckpt.pth model.onnx --shape 224 224
"""
import argparse
import os.path as osp
import sys

from mm_efficientconv.deploy import build_model, export_onnx, probe_shape


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
                        help='largest allowed |onnxruntime - PyTorch| difference, relative to '
                        'max(1, max |output|) (default: 1e-4)')
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
    from mmengine.runner import load_checkpoint

    model, cfg = build_model(args.config, args.cfg_options)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True, logger='silent')
    shape = probe_shape(cfg, model.eval(), args.batch, args.shape)
    try:
        report = export_onnx(model, args.out, shape, opset=args.opset, fold=True,
                             fuse_conv_bn=args.fuse_conv_bn, dynamic_batch=args.dynamic_batch,
                             tol=args.tol, force=args.force)
    except RuntimeError as exc:
        print(f'ERROR: {exc}', file=sys.stderr)
        return 1
    print(f'config:          {args.config}')
    print(f'checkpoint:      {args.checkpoint}')
    print(f'exported:        {"logits" if report["classifier"] else "extract_feat"} '
          f'{report["outputs"]} for input {report["input_shape"]}, opset {args.opset}')
    print(f'layers folded:   {report["folded"]}' + (' (+ conv-BN fusion)' if args.fuse_conv_bn else ''))
    print(f'max |folded - original| (PyTorch): {report["fold_abs_diff"]:.3e}')
    print(f'max |onnxruntime - PyTorch|:       {report["max_abs_diff"]:.3e}')
    print('ONNX ops:        ' + ', '.join(f'{op}: {n}' for op, n in report['ops'].items()))
    if 'Einsum' in report['ops']:
        print('WARNING: the graph contains Einsum nodes (an unfolded over-parameterised conv?)',
              file=sys.stderr)
    print(f'saved:           {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
