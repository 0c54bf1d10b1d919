# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Whole-network training steps: mmpretrain classifiers run through
mmengine's own ``model.train_step(data, optim_wrapper)`` (data preprocessor,
forward with the loss, ``parse_losses``, backward, optimiser step, gradients
cleared), as the Runner runs them.

* ``resnet_train``: mmpretrain ResNet (18 on the CPU: basic blocks; 50 on
  CUDA) with every conv built as ``DOConv`` (the kxk convs over-parameterised,
  the 1x1 convs plain) / the same plain classifier, holding the same weights.
  Time and peak training memory.
* ``mixnet_train``: our MixNet-S classifier / timm ``mixnet_s`` through
  mmpretrain's ``TimmClassifier``, same weights, same loss; each in its faster
  memory format.
* ``mobilenet_v2_train``: ``BSConvSMobileNetV2`` with ``loss_ortho``
  (``OrthoRegHook``, alpha 0.1, installed as in a Runner) / mmpretrain's
  ``MobileNetV2``, same weights.

Every classifier ends in global pooling + a 1000-class linear head with
cross-entropy (MixNet: dropout 0.2 before it, in both). SGD (momentum 0.9,
weight decay 1e-4, lr 0.01). With ``amp`` the steps run in an
``AmpOptimWrapper`` (``dtype`` float16 or bfloat16).

Peak training memory of a step = persistent state (parameters, buffers,
optimiser state) + the peak the step allocates above it
(:func:`~.harness.peak_memory_mb`).
"""
import copy
import math
from types import SimpleNamespace
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .harness import (Step, add_best_format_ratio, fmt_ratios, interleaved, log, max_abs_diff,
                      peak_memory_mb)

#: mmpretrain's ImageNet preprocessing (``to_rgb`` off: the inputs are random tensors, and
#: the channel flip would return an NCHW copy of a channels-last batch).
PREPROCESSOR = dict(type='ClsDataPreprocessor', mean=[123.675, 116.28, 103.53],
                    std=[58.395, 57.12, 57.375], to_rgb=False)
NUM_CLASSES = 1000


def _linear_head(in_channels: int, dropout: float = 0.0) -> dict:
    loss = dict(type='CrossEntropyLoss', loss_weight=1.0)
    if dropout:
        return dict(type='DropoutLinearClsHead', dropout_rate=dropout, num_classes=NUM_CLASSES,
                    in_channels=in_channels, loss=loss)
    return dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=in_channels, loss=loss)


def classifier_cfg(backbone: dict, in_channels: int, dropout: float = 0.0) -> dict:
    """An mmpretrain ``ImageClassifier`` config: ``backbone`` + global average
    pooling + linear head (mmpretrain's ``_base_/models`` layout)."""
    return dict(type='ImageClassifier', backbone=backbone, neck=dict(type='GlobalAveragePooling'),
                head=_linear_head(in_channels, dropout), data_preprocessor=PREPROCESSOR)


def build_classifier(cfg: dict, device: torch.device) -> nn.Module:
    """Builds an mmpretrain model config on ``device`` (mmpretrain's registry;
    our layers and backbones are found in mmengine's root registry). The
    modules keep their constructors' initialisation (``init_weights`` is not
    called: timing does not depend on it, and a pair is given equal weights
    by loading one state dict into both)."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules

    import mm_efficientconv  # noqa: F401  (registers layers, backbones, heads)
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(copy.deepcopy(cfg))
    return model.to(device)


def make_batch(batch: int, resolution: int, device: torch.device, seed: int = 0,
               channels_last: bool = False) -> dict:
    """A data batch as ``model.train_step`` receives it: ``inputs`` (float
    0..255) and ``data_samples`` with random ground-truth labels."""
    from mmpretrain.structures import DataSample
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.rand(batch, 3, resolution, resolution, generator=gen) * 255
    inputs = inputs.to(device)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(NUM_CLASSES, (batch, ), generator=gen)
    samples = [DataSample().set_gt_label(int(label)) for label in labels]
    return dict(inputs=inputs, data_samples=samples)


def make_optim_wrapper(model: nn.Module, amp: Optional[str] = None):
    """SGD (lr 0.01, momentum 0.9, weight decay 1e-4) in mmengine's
    ``OptimWrapper``, or ``AmpOptimWrapper`` with ``amp`` (``'float16'`` /
    ``'bfloat16'``)."""
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    if amp is None:
        return OptimWrapper(optimizer)
    if amp not in ('float16', 'bfloat16'):
        raise ValueError(f"amp must be None, 'float16' or 'bfloat16', got {amp!r}")
    return AmpOptimWrapper(optimizer=optimizer, dtype=amp)


class TrainStep(Step):
    """One ``model.train_step(batch, optim_wrapper)``; keeps the last losses
    (``last_losses``: name -> float, read after the timing)."""

    def __init__(self, model: nn.Module, batch: dict, optim_wrapper) -> None:
        self.model, self.batch, self.optim_wrapper = model, batch, optim_wrapper
        self.last_log_vars: Dict[str, torch.Tensor] = {}
        super().__init__(self._run, [p for p in model.parameters() if p.requires_grad])

    def _run(self) -> None:
        self.model.train()
        self.last_log_vars = self.model.train_step(self.batch, self.optim_wrapper)

    @property
    def last_losses(self) -> Dict[str, float]:
        return {k: float(v.detach()) for k, v in self.last_log_vars.items()}

    def persistent_mb(self) -> float:
        """Parameters, buffers and optimiser state (MiB, unique storages)."""
        tensors: List[torch.Tensor] = list(self.model.parameters()) + list(self.model.buffers())
        for state in self.optim_wrapper.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
        seen, total = set(), 0
        for t in tensors:
            key = (t.device, t.untyped_storage().data_ptr())
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
        return total / 2**20


def _train_steps(models: Dict[str, nn.Module], cfg: dict, device: torch.device,
                 channels_last: Dict[str, bool]) -> Dict[str, TrainStep]:
    amp = 'float16' if cfg['train_amp'] else None
    steps = {}
    for name, model in models.items():
        if channels_last[name]:
            model = model.to(memory_format=torch.channels_last)
        batch = make_batch(cfg['train_batch'], cfg['train_resolution'], device,
                           channels_last=channels_last[name])
        steps[name] = TrainStep(model, batch, make_optim_wrapper(model, amp))
    return steps


def _measure(steps: Dict[str, TrainStep], pairs: dict, cfg: dict, device: torch.device) -> dict:
    """Interleaved timing of the steps, then each step's peak memory and final
    losses. Rounds: as many as ``train_budget_s`` seconds of timed steps hold
    (from the sizing round's times), at least ``train_repeats`` and at most
    ``train_max_repeats``."""
    tcfg = dict(cfg, warmup=cfg['train_warmup'], min_repeats=cfg['train_repeats'],
                max_repeats=max(cfg['train_repeats'], cfg['train_max_repeats']),
                case_budget_s=cfg['train_budget_s'], min_sample_ms=0.0)
    res = interleaved(steps, pairs, tcfg, device, memory=False)
    memory = 'train_step' in cfg['memory_modes']
    res['losses'] = {}
    for name, step in steps.items():
        res['losses'][name] = step.last_losses
        if memory:
            peak = peak_memory_mb(step, device)
            out = res['results'][name]
            out['peak_mem_mb'] = peak
            out['persistent_mb'] = step.persistent_mb()
            out['train_mem_mb'] = None if peak is None else peak + out['persistent_mb']
    if memory:
        res['memory_ratios'], res['step_memory_ratios'] = {}, {}
        for key, (cand, base) in res['pairs'].items():
            a, b = res['results'][cand], res['results'][base]
            if a.get('train_mem_mb') and b.get('train_mem_mb'):
                res['memory_ratios'][key] = a['train_mem_mb'] / b['train_mem_mb']
                res['step_memory_ratios'][key] = a['peak_mem_mb'] / b['peak_mem_mb']
    finite = all(math.isfinite(v) for losses in res['losses'].values() for v in losses.values())
    if not finite:
        log(f'non-finite training loss: {res["losses"]}')
    res['finite_losses'] = finite
    return res


def _shape(cfg: dict) -> List[int]:
    return [cfg['train_batch'], 3, cfg['train_resolution'], cfg['train_resolution']]


def _logits_diff(a: nn.Module, b: nn.Module, cfg: dict, device: torch.device) -> float:
    x = torch.randn(2, 3, cfg['train_resolution'], cfg['train_resolution'], device=device)
    a.eval()
    b.eval()
    return max_abs_diff(lambda t: a(t, mode='tensor'), lambda t: b(t, mode='tensor'), x)


def resnet_cfgs(depth: int) -> Dict[str, dict]:
    """Plain and DO-Conv mmpretrain ResNet classifiers of ``depth``."""
    backbone = dict(type='ResNet', depth=depth, num_stages=4, out_indices=(3, ), style='pytorch')
    width = 512 if depth < 50 else 2048
    return dict(plain=classifier_cfg(backbone, width),
                doconv=classifier_cfg(dict(backbone, conv_cfg=dict(type='DOConv')), width))


def bench_resnet_train(cfg: dict, device: torch.device) -> dict:
    """DO-Conv ResNet / plain ResNet training step: time and memory (at the
    profile's ``resnet_train_batch``, ``resnet_train_repeats`` and
    ``resnet_train_budget_s`` where set)."""
    own = {key: cfg.get(f'resnet_{key}')
           for key in ('train_batch', 'train_repeats', 'train_budget_s')}
    cfg = dict(cfg, **{key: value for key, value in own.items() if value is not None})
    depth = cfg['train_resnet']
    cfgs = resnet_cfgs(depth)
    plain = build_classifier(cfgs['plain'], device)
    doconv = build_classifier(cfgs['doconv'], device)
    doconv.load_state_dict(plain.state_dict())  # W = weight, D' = 0: the same function
    check = dict(doconv=_logits_diff(doconv, plain, cfg, device))
    cl = cfg['train_channels_last']
    steps = _train_steps(dict(plain=plain, doconv=doconv), cfg, device,
                         dict(plain=cl, doconv=cl))
    res = _measure(steps, {'doconv/plain': ('doconv', 'plain')}, cfg, device)
    name = f'ResNet-{depth} DO-Conv / plain'
    log(f'resnet{depth} train step: ' + fmt_ratios(res['ratios'])
        + (' memory ' + fmt_ratios(res['memory_ratios']) if 'memory_ratios' in res else ''))
    return dict(cases=[dict(family='resnet_train', case=name, shape=_shape(cfg), mode='train_step',
                            baseline='plain', max_abs_diff=check, amp=cfg['train_amp'],
                            channels_last=cl, **res)])


def mixnet_cfgs() -> Dict[str, dict]:
    """Our MixNet-S classifier and timm's ``mixnet_s`` as mmpretrain
    ``TimmClassifier``; dropout 0.2 before the linear head in both, timm's BN
    eps (1e-5) in ours."""
    ours = classifier_cfg(dict(type='MixNet', arch='s', norm_cfg=dict(type='BN', eps=1e-5)),
                          1536, dropout=0.2)
    timm = dict(type='TimmClassifier', model_name='mixnet_s', pretrained=False, drop_rate=0.2,
                num_classes=NUM_CLASSES, loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
                data_preprocessor=PREPROCESSOR)
    return dict(ours=ours, timm=timm)


def bench_mixnet_train(cfg: dict, device: torch.device) -> dict:
    """Our MixNet-S / timm mixnet_s training step, best memory format each."""
    from mm_efficientconv.backbones.mixnet import convert_timm_mixnet
    cfgs = mixnet_cfgs()
    timm_model = build_classifier(cfgs['timm'], device)
    ours = build_classifier(cfgs['ours'], device)
    ours.load_state_dict(convert_timm_mixnet(timm_model.model.state_dict(),
                                             backbone_prefix='backbone.', head_prefix='head.fc.'))
    check = dict(ours=_logits_diff(ours, timm_model, cfg, device))
    models, pairs = {}, {}
    for fmt in cfg['mixnet_train_formats']:
        models.update({f'ours@{fmt}': copy.deepcopy(ours), f'timm@{fmt}': copy.deepcopy(timm_model)})
        pairs[f'ours/timm@{fmt}'] = (f'ours@{fmt}', f'timm@{fmt}')
    steps = _train_steps(models, cfg, device, {n: n.endswith('@cl') for n in models})
    res = _measure(steps, pairs, cfg, device)
    add_best_format_ratio(res, ('ours', 'timm'), 'ours best/timm best')
    log('mixnet_s train step: ' + fmt_ratios(res['ratios']))
    return dict(cases=[dict(family='mixnet_s', case='MixNet-S / timm mixnet_s (classifiers)',
                            shape=_shape(cfg), mode='train_step', baseline='timm',
                            max_abs_diff=check, amp=cfg['train_amp'], **res)])


def mobilenet_v2_cfgs() -> Dict[str, dict]:
    """mmpretrain's MobileNetV2 classifier and the BSConv-S one."""
    return dict(plain=classifier_cfg(dict(type='MobileNetV2', widen_factor=1.0), 1280),
                bsconvs=classifier_cfg(dict(type='BSConvSMobileNetV2', widen_factor=1.0), 1280))


def install_ortho_reg(model: nn.Module, alpha: float = 0.1):
    """Installs ``loss_ortho`` on ``model`` the way a Runner does
    (``OrthoRegHook.before_train``); returns the hook."""
    from mm_efficientconv.hooks.ortho_reg import OrthoRegHook
    hook = OrthoRegHook(alpha=alpha)
    hook.before_train(SimpleNamespace(model=model))
    return hook


def bench_mobilenet_v2_train(cfg: dict, device: torch.device) -> dict:
    """BSConv-S MobileNetV2 with loss_ortho / mmpretrain MobileNetV2."""
    cfgs = mobilenet_v2_cfgs()
    plain = build_classifier(cfgs['plain'], device)
    bsconvs = build_classifier(cfgs['bsconvs'], device)
    bsconvs.load_state_dict(plain.state_dict())
    check = dict(bsconvs=_logits_diff(bsconvs, plain, cfg, device))
    install_ortho_reg(bsconvs, alpha=0.1)
    cl = cfg['train_channels_last']
    steps = _train_steps(dict(plain=plain, bsconvs=bsconvs), cfg, device,
                         dict(plain=cl, bsconvs=cl))
    res = _measure(steps, {'bsconvs/plain': ('bsconvs', 'plain')}, cfg, device)
    if 'loss_ortho' not in res['losses']['bsconvs']:
        raise RuntimeError('the BSConv-S MobileNetV2 step did not add loss_ortho')
    log('mobilenet_v2 train step: ' + fmt_ratios(res['ratios']))
    return dict(cases=[dict(family='mobilenet_v2', case='MobileNetV2 BSConv-S + loss_ortho / plain',
                            shape=_shape(cfg), mode='train_step', baseline='plain',
                            max_abs_diff=check, amp=cfg['train_amp'], channels_last=cl, **res)])
