# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Fold a training checkpoint into its deploy form.

Builds the model of CONFIG, loads CHECKPOINT, converts it with
``mm_efficientconv.layers.deploy.switch_to_deploy`` (DO-Conv and MixConv
become plain ``nn.Conv2d`` at the same attribute path, BSConv folds what it
can) and writes ``{'state_dict', 'meta'}`` to OUT. For DO-Conv/MixConv models
the keys are exactly those of the stock config without the plugin, so OUT
loads strictly into a stock mmpretrain/mmdet/mmseg model;
``--check-stock-config STOCK_CONFIG`` proves it in a subprocess that never
imports mm_efficientconv.

The input file is never modified; OUT is written atomically (temporary file +
``os.replace``) and an existing OUT is only replaced with ``--force``.

Examples:
    python tools/deploy/fold_checkpoint.py CONFIG epoch_100.pth epoch_100_deploy.pth
    python tools/deploy/fold_checkpoint.py CONFIG ckpt.pth out.pth \\
        --check-stock-config mmpretrain::resnet/resnet50_8xb32_in1k.py

The helpers at module level import neither mm_efficientconv nor a codebase,
so the stock check can reuse them in a clean interpreter.
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import tempfile
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

DEFAULT_DETECTION_SHAPE = (256, 256)
DEFAULT_CLASSIFIER_SIZE = 224


# ---------------------------------------------- helpers shared with the stock check
def build_model(config, cfg_options: Optional[dict] = None) -> Tuple[nn.Module, object]:
    """Builds the model of ``config`` (a path or a ``Config``) in the config's
    default scope, in eval mode on the CPU. Returns ``(model, cfg)``."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    if isinstance(config, Config):
        cfg = config
    elif '::' in config and not osp.exists(config):
        # a config shipped in a codebase's package, e.g. 'mmdet::faster_rcnn/xxx.py'
        from mmengine.hub import get_config
        cfg = get_config(config)
    else:
        cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', None) or 'mmengine')
    model_cfg = cfg.model.copy()
    if 'data_preprocessor' not in model_cfg and cfg.get('data_preprocessor', None) is not None:
        model_cfg['data_preprocessor'] = cfg.data_preprocessor  # mmpretrain/mmseg style
    model = MODELS.build(model_cfg)
    return model.eval(), cfg


def _walk_transforms(node) -> Iterator[dict]:
    if isinstance(node, dict):
        if 'type' in node and isinstance(node.get('type'), str):
            yield node
        for value in node.values():
            yield from _walk_transforms(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _walk_transforms(value)


def _as_hw(value) -> Optional[Tuple[int, int]]:
    if isinstance(value, int) and value > 0:
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and v > 0 for v in value):
        return int(value[1]), int(value[0])  # OpenMMLab scales are (w, h)
    return None


def is_classifier(model: nn.Module) -> bool:
    """Whether ``model`` is an mmpretrain classifier (checked by name so that
    mmpretrain need not be imported)."""
    return any(c.__name__ == 'BaseClassifier' and c.__module__.startswith('mmpretrain')
               for c in type(model).__mro__)


def probe_shape(cfg, model: nn.Module, batch: int = 2,
                shape: Optional[Sequence[int]] = None) -> Tuple[int, int, int, int]:
    """``(N, C, H, W)`` of a probe batch: C from the data preprocessor's mean
    (3 if none), H x W from ``shape`` or, for classifiers, the crop/resize
    size of the config's pipelines (test, val, then train; 224 if none); for
    detectors/segmentors 256 x 256."""
    mean = getattr(getattr(model, 'data_preprocessor', None), 'mean', None)
    channels = int(mean.numel()) if isinstance(mean, torch.Tensor) and mean.numel() > 0 else 3
    if shape is not None:
        return batch, channels, int(shape[0]), int(shape[1])
    if not is_classifier(model):
        return (batch, channels) + DEFAULT_DETECTION_SHAPE
    for section in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
        found = None  # the last size a pipeline sets is what the model sees (resize, then crop)
        for transform in _walk_transforms(cfg.get(section, None)):
            for key in ('crop_size', 'scale', 'size'):
                hw = _as_hw(transform.get(key))
                if hw is not None:
                    found = hw
                    break
        if found is not None:
            return (batch, channels) + found
    return batch, channels, DEFAULT_CLASSIFIER_SIZE, DEFAULT_CLASSIFIER_SIZE


def flatten_outputs(out) -> List[torch.Tensor]:
    """The tensors of a (nested) tensor / tuple / list / dict output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for key in out for t in flatten_outputs(out[key])]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in flatten_outputs(item)]
    return []


@torch.no_grad()
def probe_forward(model: nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    """Classifier: ``forward(x, mode='tensor')`` (the logits); detector or
    segmentor: ``extract_feat(x)`` (backbone + neck features)."""
    if not is_classifier(model) and callable(getattr(model, 'extract_feat', None)):
        out = model.extract_feat(x)
    else:
        out = model(x, mode='tensor')
    return [t.float() for t in flatten_outputs(out)]


def max_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise RuntimeError(f'output structures differ: {[tuple(t.shape) for t in a]} vs '
                           f'{[tuple(t.shape) for t in b]}')
    return max(((x - y).abs().max().item() for x, y in zip(a, b)), default=0.0)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def stock_check(config: str, checkpoint: str, probe_file: str) -> dict:
    """Runs in a clean interpreter: builds the stock ``config`` (must not import
    mm_efficientconv), loads ``checkpoint`` strictly and compares its probe
    outputs with the folded model's ones stored in ``probe_file``."""
    from mmengine.runner import load_checkpoint
    model, _ = build_model(config)
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    expected = set(model.state_dict().keys())
    got = set(state.keys())
    result = dict(missing=sorted(expected - got), unexpected=sorted(got - expected))
    if not result['missing'] and not result['unexpected']:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
        probe = torch.load(probe_file, map_location='cpu', weights_only=True)
        outputs = probe_forward(model, probe['input'])
        result['max_abs_diff'] = max_abs_diff(outputs, probe['outputs'])
    result['imported_mm_efficientconv'] = any(
        name == 'mm_efficientconv' or name.startswith('mm_efficientconv.') for name in sys.modules)
    return result


_STOCK_SCRIPT = """
import json, sys
sys.path.insert(0, {tools_dir!r})
import fold_checkpoint
result = fold_checkpoint.stock_check({config!r}, {checkpoint!r}, {probe!r})
print('STOCK_CHECK ' + json.dumps(result))
"""


def run_stock_check(config: str, checkpoint: str, probe_file: str) -> dict:
    """Runs :func:`stock_check` in a subprocess and returns its result."""
    script = _STOCK_SCRIPT.format(tools_dir=osp.dirname(osp.abspath(__file__)), config=config,
                                  checkpoint=osp.abspath(checkpoint), probe=probe_file)
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith('STOCK_CHECK '):
            return json.loads(line[len('STOCK_CHECK '):])
    raise RuntimeError(f'the stock-config check failed (exit code {proc.returncode}):\n'
                       f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')


# ------------------------------------------------------------------ the tool
def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Fold a training checkpoint into its deploy (inference) form')
    parser.add_argument('config', help='config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='training checkpoint (never modified)')
    parser.add_argument('out', help='output checkpoint')
    parser.add_argument('--force', action='store_true', help='overwrite an existing OUT')
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='also fuse every conv with its following BN (mmcv.cnn.fuse_conv_bn); '
                        'the BN keys then disappear from the state dict')
    parser.add_argument('--check-stock-config', metavar='STOCK_CONFIG',
                        help='stock config without the plugin (e.g. mmpretrain::resnet/...): load '
                        'OUT strictly into it in a subprocess that never imports '
                        'mm_efficientconv and compare outputs')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='probe input size (default: from the config pipelines)')
    parser.add_argument('--batch', type=int, default=2, help='probe batch size (default: 2)')
    parser.add_argument('--tol', type=float, default=1e-4,
                        help='largest allowed |folded - original| output difference, relative to '
                        'max(1, max |original|) (default: 1e-4)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of CONFIG, as key=value pairs')
    args = parser.parse_args(argv)
    if args.fuse_conv_bn and args.check_stock_config:
        parser.error('--check-stock-config needs the stock state-dict keys, which '
                     '--fuse-conv-bn removes (BN entries): use one or the other')
    if args.batch < 1:
        parser.error(f'--batch must be >= 1, got {args.batch}')
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint not found: {args.checkpoint}')
    if osp.exists(args.out) and osp.samefile(args.out, args.checkpoint):
        parser.error('OUT is the input checkpoint; the input is never overwritten')
    if osp.exists(args.out) and not args.force:
        parser.error(f'{args.out} exists; pass --force to overwrite it')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import mm_efficientconv  # noqa: F401  (registries and compat fixes)
    from mmengine.runner import load_checkpoint

    from mm_efficientconv.hooks.deploy import atomic_torch_save, cpu_state_dict, plain_meta
    from mm_efficientconv.layers.deploy import fold_model

    model, cfg = build_model(args.config, args.cfg_options)
    checkpoint = load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True,
                                 logger='silent')
    model.eval()
    shape = probe_shape(cfg, model, args.batch, args.shape)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator)

    params_before = num_params(model)
    reference = probe_forward(model, x)
    model, folded = fold_model(model, args.fuse_conv_bn)
    params_after = num_params(model)
    outputs = probe_forward(model, x)
    diff = max_abs_diff(reference, outputs)
    scale = max([1.0] + [t.abs().max().item() for t in reference])

    print(f'config:          {args.config}')
    print(f'checkpoint:      {args.checkpoint}')
    print(f'layers folded:   {folded}' + (' (+ conv-BN fusion)' if args.fuse_conv_bn else ''))
    print(f'params:          {params_before:,} -> {params_after:,}')
    print(f'probe input:     {tuple(shape)}')
    print(f'max |folded - original| output: {diff:.3e}')
    if not diff <= args.tol * scale:
        print(f'ERROR: the folded model differs from the original by {diff:.3e} '
              f'(> {args.tol:g} x {scale:.3g}); nothing written', file=sys.stderr)
        return 1

    meta = dict(checkpoint.get('meta') or {}) if isinstance(checkpoint, dict) else {}
    meta.update(
        deploy=True,
        folded_modules=folded,
        fuse_conv_bn=args.fuse_conv_bn,
        source_checkpoint=osp.abspath(args.checkpoint),
        source_config=str(args.config),
        params_before=params_before,
        params_after=params_after,
        max_abs_diff=diff,
        mm_efficientconv_version=mm_efficientconv.__version__)
    state_dict = cpu_state_dict(model)
    atomic_torch_save({'state_dict': state_dict, 'meta': plain_meta(meta)}, args.out)
    print(f'saved:           {args.out} ({len(state_dict)} keys)')

    if args.check_stock_config:
        with tempfile.TemporaryDirectory() as tmp:
            probe_file = osp.join(tmp, 'probe.pth')
            torch.save({'input': x, 'outputs': outputs}, probe_file)
            result = run_stock_check(args.check_stock_config, args.out, probe_file)
        if result['imported_mm_efficientconv']:
            print('ERROR: the stock check imported mm_efficientconv (does the stock config '
                  'import it?)', file=sys.stderr)
            return 1
        if result['missing'] or result['unexpected']:
            print(f"ERROR: keys differ from {args.check_stock_config}: missing "
                  f"{result['missing'][:10]}, unexpected {result['unexpected'][:10]}",
                  file=sys.stderr)
            return 1
        print(f"stock config:    {args.check_stock_config}: strict load ok, "
              f"max |stock - folded| output: {result['max_abs_diff']:.3e}")
        if not result['max_abs_diff'] <= args.tol * scale:
            print('ERROR: the stock model does not reproduce the folded outputs', file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
