# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The sdist and the wheel, installed the way a user with an existing
OpenMMLab environment installs them.

Built from a clean copy of the tree without the compiled op (the wheel is
built from the sdist), then installed by pip with ``--no-index`` into a fresh
virtual environment that sees this environment's stack (torch, mmcv,
mmengine, the codebases) through a ``.pth`` file but not our editable
install: the install succeeds only if every requirement is already satisfied,
and it must install nothing but mm_efficientconv. Everything then runs in the
fresh environment with the working directory outside the repository.
"""
import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tools' / 'setup'))
from build_dist import build_dist  # noqa: E402

pytestmark = pytest.mark.slow

BASE = 'mm_efficientconv::doconv/faster-rcnn_r50-doconv_fpn_1x_coco.py'


def _shipped(kind: str):
    """Repository files the package must carry in ``.mim`` (tools/setup
    builds this repository's own environment: not shipped)."""
    files = {p.relative_to(REPO).as_posix() for p in (REPO / kind).rglob('*')
             if p.is_file() and '__pycache__' not in p.parts and p.suffix != '.pyc'}
    return {f for f in files if not f.startswith('tools/setup/')}


@pytest.fixture(scope='module')
def dist(tmp_path_factory):
    pytest.importorskip('build')
    return build_dist(str(tmp_path_factory.mktemp('dist')), with_ops=False)


@pytest.fixture(scope='module')
def fresh(tmp_path_factory, dist):
    """(python of the fresh environment, its environment variables, a work
    folder outside the repository)."""
    tmp = tmp_path_factory.mktemp('fresh')
    # this environment's packages, without mm_efficientconv (editable finder, metadata)
    stack = tmp / 'stack'
    stack.mkdir()
    for entry in Path(sysconfig.get_paths()['purelib']).iterdir():
        name = entry.name.lower().replace('-', '_')
        if entry.suffix == '.pth' or 'mm_efficientconv' in name or name.startswith('__editable__'):
            continue
        (stack / entry.name).symlink_to(entry)
    env_dir = tmp / 'venv'
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(env_dir)
    python = str(env_dir / 'bin' / 'python')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    site = subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          capture_output=True, text=True, check=True, env=env).stdout.strip()
    Path(site, 'existing_stack.pth').write_text(f'{stack}\n')
    result = subprocess.run(
        [sys.executable, '-m', 'pip', '--python', python, 'install', '--no-index',
         '--disable-pip-version-check', dist['wheel']],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # every requirement was satisfied by the existing stack: pip installed only our package
    installed = re.findall(r'Successfully installed (.+)', result.stdout)
    assert installed and installed[-1].split() == ['mm-efficientconv-0.1.0'], result.stdout[-3000:]
    work = tmp / 'work'
    work.mkdir()
    return python, env, work


def _run(fresh, *args, timeout=600):
    python, env, work = fresh
    result = subprocess.run([python, *args], cwd=work, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-4000:] + '\n' + result.stderr[-6000:]
    return result


def test_archives_carry_configs_tools_and_model_index(dist):
    wheel = zipfile.ZipFile(dist['wheel'])
    names = set(wheel.namelist())
    mim = {n[len('mm_efficientconv/.mim/'):] for n in names if n.startswith('mm_efficientconv/.mim/')}
    assert 'model-index.yml' in mim
    expected = {f for f in _shipped('configs') | _shipped('tools')
                if f.endswith(('.py', '.sh', '.yml', '.md'))}
    assert expected and expected <= mim, sorted(expected - mim)
    assert not any(n.startswith('tools/setup/') for n in mim)
    # built without the compiled op: a pure-Python wheel
    assert Path(dist['wheel']).name == 'mm_efficientconv-0.1.0-py3-none-any.whl'
    assert not any(n.endswith('.so') for n in names)
    with tarfile.open(dist['sdist']) as sdist:
        members = {m.name.split('/', 1)[1] for m in sdist.getmembers() if '/' in m.name}
    for required in ('setup.py', 'pyproject.toml', 'MANIFEST.in', 'README.md',
                     'mm_efficientconv/csrc/doconv_compose.cpp',
                     'mm_efficientconv/csrc/batch_norm_act.cpp', 'mm_efficientconv/csrc/ext.cpp',
                     'mm_efficientconv/.mim/model-index.yml',
                     'mm_efficientconv/.mim/configs/doconv/faster-rcnn_r50-doconv_fpn_1x_coco.py',
                     'mm_efficientconv/.mim/tools/train.py'):
        assert required in members, required


def test_installed_package_is_the_wheel_on_the_pytorch_path(fresh):
    script = textwrap.dedent('''
        import json, os, torch, mmcv
        import mm_efficientconv
        from mm_efficientconv import DOConv
        from mm_efficientconv.layers.doconv_compose import fused_compose_available
        root = os.path.dirname(mm_efficientconv.__file__)
        layer = DOConv(4, 4, 3, padding=1)
        layer(torch.randn(2, 4, 8, 8)).sum().backward()  # training step without the compiled op
        print(json.dumps(dict(
            package=mm_efficientconv.__file__, torch=torch.__file__, mmcv=mmcv.__file__,
            fused=fused_compose_available(), grad=layer.W.grad is not None,
            mim=sorted(os.listdir(os.path.join(root, '.mim'))))))
    ''')
    info = json.loads(_run(fresh, '-c', script).stdout.strip().splitlines()[-1])
    env_dir = Path(fresh[0]).parents[1]
    assert Path(info['package']).is_relative_to(env_dir)  # the wheel, not the repository
    assert not Path(info['package']).is_relative_to(REPO)
    for stack in ('torch', 'mmcv'):  # the existing stack, untouched
        assert not Path(info[stack]).is_relative_to(env_dir / 'lib')
    assert info['fused'] is False and info['grad'] is True
    assert info['mim'] == ['configs', 'model-index.yml', 'tools']


def test_mim_search_reads_the_model_index(fresh):
    """``mim search`` parses the installed model index and every metafile."""
    out = _run(fresh, '-m', 'mim', 'search', 'mm_efficientconv', '--field', 'config').stdout
    configs = set(re.findall(r'configs/[\w./-]+\.py', out))
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / 'configs').glob('*/*.py')
                if p.parent.name != '_base_'}
    assert configs == expected, out[-3000:]


# installed configs of each codebase, each with top-level dicts of its own (model, hooks,
# conv_cfg) that mmengine would otherwise tie to an `mm_efficientconv` registry scope
INHERITED = {
    BASE: ('mmdet', 'FasterRCNN', 'DOConv'),
    'mm_efficientconv::bsconv/resnet20_1xb128_cifar10.py': ('mmpretrain', 'ImageClassifier',
                                                            'CifarResNet'),
    'mm_efficientconv::bsconv/ssdlite_mobilenet-v2-bsconvs_8xb24-600e_coco.py':
    ('mmdet', 'SingleStageDetector', 'OrthoRegHook'),
}


def test_user_configs_inherit_installed_configs(fresh):
    """A user config inheriting an installed config builds a Runner (model
    and hooks) in the codebase's scope."""
    _, _, work = fresh
    for i, base in enumerate(INHERITED):
        (work / f'user_{i}.py').write_text(
            f"_base_ = '{base}'\nmodel = dict(backbone=dict(init_cfg=None))\n")
    script = textwrap.dedent('''
        import json, sys
        import mm_efficientconv  # registers the `mm_efficientconv::` prefix with mmengine
        from mmengine.config import Config
        from mmengine.runner import Runner
        found = []
        for i in range(int(sys.argv[1])):
            cfg = Config.fromfile(f'user_{i}.py')
            cfg.work_dir = f'runner_{i}'
            runner = Runner.from_cfg(cfg)
            names = {type(m).__name__ for m in runner.model.modules()}
            names |= {type(h).__name__ for h in runner.hooks}
            found.append([cfg.default_scope, type(runner.model).__name__, sorted(names)])
        print(json.dumps(found))
    ''')
    found = json.loads(_run(fresh, '-c', script, str(len(INHERITED))).stdout.splitlines()[-1])
    for (scope, model, names), (expected_scope, expected_model, component) in zip(
            found, INHERITED.values()):
        assert (scope, model) == (expected_scope, expected_model)
        assert component in names


def test_mim_train_and_test(fresh):
    """``mim train`` / ``mim test`` run the package's own .mim/tools on a user
    config inheriting an installed config: one epoch (two iterations) of
    DO-Conv Faster R-CNN on a tiny synthetic COCO, then the evaluation of its
    checkpoint with the config's metric."""
    _, _, work = fresh
    data = _run(fresh, '-c', textwrap.dedent('''
        import json
        from mm_efficientconv.testing import write_coco
        print(json.dumps(write_coco('coco', num_images=2, image_size=(128, 96), num_val_images=2)))
    ''')).stdout.strip().splitlines()[-1]
    data = json.loads(data)
    root = str(work / 'coco') + '/'
    pipeline = {
        'train': "[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True), "
                 "dict(type='Resize', scale=(128, 128), keep_ratio=True), dict(type='PackDetInputs')]",
        'val': "[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 128), "
               "keep_ratio=True), dict(type='LoadAnnotations', with_bbox=True), "
               "dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', "
               "'img_shape', 'scale_factor'))]",
    }
    loaders = {
        split: (f"dict(batch_size=1, num_workers=0, persistent_workers=False, "
                f"dataset=dict(data_root='{root}', ann_file='{data['splits'][split]['ann_file']}', "
                f"data_prefix=dict(img='{data['splits'][split]['data_prefix']['img']}'), "
                f"pipeline={pipeline[split]}))")
        for split in ('train', 'val')
    }
    (work / 'user_train.py').write_text(textwrap.dedent(f'''\
        _base_ = '{BASE}'
        model = dict(
            backbone=dict(init_cfg=None),  # no ImageNet download
            test_cfg=dict(rcnn=dict(score_thr=0.0)))  # keep the untrained model's boxes
        train_dataloader = {loaders['train']}
        val_dataloader = {loaders['val']}
        test_dataloader = val_dataloader
        val_evaluator = dict(ann_file='{root}{data['splits']['val']['ann_file']}')
        test_evaluator = val_evaluator
        train_cfg = dict(max_epochs=1, val_interval=2)  # no validation: `mim test` evaluates
        default_hooks = dict(logger=dict(interval=1))
        '''))
    train = _run(fresh, '-m', 'mim', 'train', 'mm_efficientconv', 'user_train.py', '--work-dir',
                 'work_dir')
    assert '.mim/tools/train.py' in train.stdout
    checkpoint = work / 'work_dir' / 'epoch_1.pth'
    assert checkpoint.is_file(), train.stdout[-3000:] + train.stderr[-3000:]
    log = train.stdout + train.stderr
    assert re.search(r'Epoch\(train\)\s+\[1\]\[2/2\].*loss: \d', log), log[-3000:]
    test = _run(fresh, '-m', 'mim', 'test', 'mm_efficientconv', 'user_train.py', '--checkpoint',
                str(checkpoint), '--work-dir', 'test_dir')
    assert '.mim/tools/test.py' in test.stdout
    assert re.search(r'Epoch\(test\)\s+\[2/2\].*coco/bbox_mAP: ', test.stdout + test.stderr), \
        (test.stdout + test.stderr)[-3000:]
