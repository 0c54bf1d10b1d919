"""Registry design: everything lives in mmengine's root registries under names that no
codebase shadows, and is found from configs of mmpretrain, mmdet and mmseg."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmcv.cnn import ConvModule, build_conv_layer
from mmengine.registry import DATASETS, HOOKS, MODELS, TRANSFORMS, DefaultScope

import mm_efficientconv

REPO = Path(__file__).resolve().parents[1]

LAYERS = ['BSConvU', 'BSConvS', 'MixConv', 'MixGroupedPointwise', 'DOConv']
BACKBONES = ['MobileNetV1', 'BSConvSMobileNetV2', 'BSConvSMobileNetV3', 'CifarResNet', 'CifarWideResNet',
             'BasicBlockResNet', 'MixNet']
HOOK_NAMES = ['OrthoRegHook', 'ConvDeployHook']
SCOPES = ['mmpretrain', 'mmdet', 'mmseg']


def _ours(registry):
    return {name for name, cls in registry.module_dict.items()
            if getattr(cls, '__module__', '').startswith('mm_efficientconv')}


def _codebase_registries(scope):
    if scope == 'mmpretrain':
        import mmpretrain.models  # noqa: F401
        import mmpretrain.engine  # noqa: F401
        import mmpretrain.datasets  # noqa: F401
        from mmpretrain import registry
    elif scope == 'mmdet':
        import mmdet.models  # noqa: F401
        import mmdet.engine  # noqa: F401
        import mmdet.datasets  # noqa: F401
        from mmdet import registry
    else:
        import mmseg.models  # noqa: F401
        import mmseg.engine  # noqa: F401
        import mmseg.datasets  # noqa: F401
        from mmseg import registry
    return {'MODELS': registry.MODELS, 'HOOKS': registry.HOOKS, 'TRANSFORMS': registry.TRANSFORMS,
            'DATASETS': registry.DATASETS}


def test_everything_is_in_the_root_registries():
    assert set(LAYERS + BACKBONES) <= _ours(MODELS)
    assert set(HOOK_NAMES) <= _ours(HOOKS)
    assert 'DropoutLinearClsHead' in _ours(MODELS)
    assert 'SklearnDigitsDataset' in _ours(DATASETS) and 'RandomGamma' in _ours(TRANSFORMS)
    for name in LAYERS + BACKBONES:
        assert MODELS.get(name).__module__.startswith('mm_efficientconv.')
    # the package exports the deploy entry point
    assert callable(mm_efficientconv.switch_to_deploy)


@pytest.mark.parametrize('scope', SCOPES)
def test_no_name_is_shadowed_by_a_codebase(scope):
    codebase = _codebase_registries(scope)
    root = {'MODELS': MODELS, 'HOOKS': HOOKS, 'TRANSFORMS': TRANSFORMS, 'DATASETS': DATASETS}
    for kind, registry in codebase.items():
        ours = _ours(root[kind])
        clashes = ours & set(registry.module_dict)
        assert not clashes, f'{scope} {kind} registers {sorted(clashes)} too: rename ours'


@pytest.mark.parametrize('scope', SCOPES)
def test_components_build_under_each_scope(scope):
    registries = _codebase_registries(scope)
    with DefaultScope.overwrite_default_scope(scope):
        for name in LAYERS:
            extra = dict(kernel_sizes=(3, 5)) if name == 'MixConv' else {}
            groups = 8 if name == 'MixConv' else 1
            kernel = 1 if name == 'MixGroupedPointwise' else 3
            conv = build_conv_layer(dict(type=name, **extra), 8, 8, kernel, padding=kernel // 2,
                                    groups=groups)
            assert type(conv).__name__ == name
            module = ConvModule(8, 8, kernel, padding=kernel // 2, groups=groups,
                                conv_cfg=dict(type=name, **extra), norm_cfg=dict(type='BN'))
            assert module(torch.randn(1, 8, 8, 8)).shape == (1, 8, 8, 8)
        backbone = registries['MODELS'].build(dict(type='MixNet', arch='s', out_indices=(1, )))
        assert type(backbone).__name__ == 'MixNet'
        hook = registries['HOOKS'].build(dict(type='OrthoRegHook', alpha=0.01))
        assert type(hook).__name__ == 'OrthoRegHook'


def test_custom_imports_registers_in_a_fresh_process(tmp_path):
    """What a user's config does: custom_imports, then build under the codebase's scope,
    in a process that has not imported the plugin before."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        "_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'\n"
        "custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(conv_cfg=dict(type='DOConv'), init_cfg=None))\n")
    code = (
        'import sys\n'
        'from mmengine.config import Config\n'
        'from mmengine.registry import init_default_scope\n'
        f'cfg = Config.fromfile({str(cfg)!r})\n'
        "assert 'mm_efficientconv' in sys.modules\n"
        'init_default_scope(cfg.default_scope)\n'
        'from mmdet.registry import MODELS\n'
        'model = MODELS.build(cfg.model)\n'
        "print(type(model.backbone.layer1[0].conv2).__name__)\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == 'DOConv'
