# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The GPU check's CPU path (``mm_efficientconv.benchmark.gpu_check``, CLI
``tools/analysis/gpu_check.py``): the parity, AMP-training, ONNX and profile sections
run green on the CPU with the short profile (the benchmark section is the
benchmark's smoke run, tested in test_benchmark.py), and a broken layer is
caught by the parity check."""
import importlib.util
import json
import sys

import pytest
import torch

from mm_efficientconv.benchmark import gpu_check

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def cpu_report(tmp_path_factory):
    pytest.importorskip('onnxruntime')
    out = tmp_path_factory.mktemp('gpu_check') / 'cpu.json'
    return out, gpu_check.run_gpu_check('cpu', 'short', ('parity', 'train', 'onnx', 'profile'),
                                        str(out))


def test_cpu_path_passes(cpu_report):
    out, report = cpu_report
    failed = {k: s.get('error', s) for k, s in report['sections'].items() if not s['passed']}
    assert report['passed'], failed
    assert json.loads(out.read_text())['passed'] is True
    md = out.with_suffix('.md').read_text()
    assert '**PASSED**' in md and '| parity | yes |' in md


def test_parity_covers_every_layer_and_precision(cpu_report):
    _, report = cpu_report
    rows = report['sections']['parity']['rows']
    layers = {r['layer'] for r in rows}
    assert {'BSConvU', 'BSConvS', 'MixConv', 'MixGroupedPointwise', 'DOConv'} <= layers
    assert {(r['layer'], r['precision']) for r in rows} == {
        (layer, p) for layer in layers for p in ('fp32', 'fp16', 'bf16')}
    for row in rows:
        # gradients of every parameter and of the input, and the deploy form, were compared
        assert {'out', 'dx', 'deploy out'} <= set(row['errors'])
        assert any(k.startswith('grad ') for k in row['errors'])
        assert row['dtype'] == row['conv2d_dtype']


def test_training_steps_in_both_amp_dtypes(cpu_report):
    _, report = cpu_report
    rows = report['sections']['train']['rows']
    assert {(r['model'], r['amp']) for r in rows} == {
        (m, a) for m in ('DO-Conv ResNet-50', 'MixNet-S', 'BSConv-S MobileNetV2')
        for a in ('float16', 'bfloat16')}
    for row in rows:
        assert row['passed'] and len(row['losses']) == 2
    ortho = [r for r in rows if r['model'] == 'BSConv-S MobileNetV2']
    assert all(r['dtypes']['loss_ortho'] == 'float32' for r in ortho)


def test_onnx_export_of_the_model_on_the_device(cpu_report):
    out, report = cpu_report
    onnx = report['sections']['onnx']
    assert onnx['model_device'] == 'cpu'
    assert onnx['max_abs_diff'] <= 1e-4 * onnx['output_scale']
    assert onnx['path'].endswith('_resnet18-doconv.onnx')


def test_parity_catches_a_wrong_layer(monkeypatch):
    """A layer whose device result is off by 1% fails the fp32 bound."""
    from mm_efficientconv.layers import DOConv

    class Skewed(DOConv):

        def forward(self, x):
            out = super().forward(x)
            return out * 1.01 if x.dtype != torch.float64 else out

    monkeypatch.setattr(gpu_check, '_layers', lambda size: [
        ('skewed', lambda: Skewed(4, 4, 3, padding=1), (1, 4, size, size))])
    result = gpu_check.check_parity(torch.device('cpu'), 8)
    fp32 = next(r for r in result['rows'] if r['precision'] == 'fp32')
    assert not fp32['passed'] and not result['passed']
    assert fp32['errors']['out'] > gpu_check.TOLERANCES['fp32']


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='sections must be a non-empty subset'):
        gpu_check.run_gpu_check('cpu', 'short', ('parity', 'speed'), str(tmp_path / 'x.json'))
    with pytest.raises(ValueError, match="device must be 'cuda' or 'cpu'"):
        gpu_check.run_gpu_check('tpu', 'short', ('parity', ), str(tmp_path / 'x.json'))
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match='no CUDA device'):
            gpu_check.run_gpu_check('cuda', None, ('parity', ), str(tmp_path / 'x.json'))
    assert not list(tmp_path.iterdir())


def test_pack_deps_follows_requirements_and_leaves_binaries(tmp_path):
    target = tmp_path / 'deps'
    result = gpu_check.pack_pure_python_deps(str(target), roots=('yapf', 'no_such_distribution'))
    # yapf's second top-level package and its pure-Python requirement come along, with metadata
    assert {'yapf', 'platformdirs'} <= set(result['copied'])
    assert result['missing'] == ['no_such_distribution'] and result['binary'] == []
    assert (target / 'yapf_third_party').is_dir() and list(target.glob('yapf-*.dist-info'))
    with pytest.raises(SystemExit, match='exists'):
        gpu_check.pack_pure_python_deps(str(target), roots=('yapf', ))
    # a root is copied without compiled modules; required distributions that have them are not
    result = gpu_check.pack_pure_python_deps(str(tmp_path / 'mmcv'), roots=('mmcv', ))
    assert 'mmcv' in result['copied'] and {'numpy', 'PyYAML'} <= set(result['binary'])
    assert (tmp_path / 'mmcv' / 'mmcv' / '__init__.py').exists()
    assert not list((tmp_path / 'mmcv').rglob('*.so')) and not (tmp_path / 'mmcv' / 'numpy').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['deps', 'mmcv']  # no temporary left


def test_deps_fill_gaps_behind_installed_packages(tmp_path, repo_root):
    """--deps puts the packed folder last on sys.path: installed packages win."""
    spec = importlib.util.spec_from_file_location(
        'mmeff_gpu_check_cli', repo_root / 'tools' / 'analysis' / 'gpu_check.py')
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    deps = tmp_path / 'deps'
    deps.mkdir()
    before = list(sys.path)
    try:
        cli.main(['--device', 'cpu', '--deps', str(deps), '--sections', 'parity',
                  '--out', str(tmp_path / 'out' / 'p.json')])
        assert sys.path[-1] == str(deps)
    finally:
        sys.path[:] = before
    # the CLI's section list (it parses before the package may be importable) is the library's
    assert cli.SECTIONS == gpu_check.SECTIONS
    assert json.loads((tmp_path / 'out' / 'p.json').read_text())['complete'] is True


def test_summary_of_a_partial_run_and_of_the_batch_scaling():
    """The markdown names an incomplete run as such and lists the training
    steps' milliseconds at both batches and the keys at the larger one."""
    machine = dict(device='cuda', gpu='A GPU', torch='2.x')
    bench = dict(passed=True, seconds=1.0, keys={'folded_over_plain': 0.97},
                 train_step_ms={64: {'resnet_train plain': 25.0}, 256: {'resnet_train plain': 47.7}},
                 keys_at_scaling_batch={'resnet_doconv_train_over_plain': 1.038})
    report = dict(profile='full', machine=machine, elapsed_s=3.0, complete=False, passed=False,
                  sections={'benchmark': bench})
    md = gpu_check.summary_markdown(report)
    assert '**INCOMPLETE (1 sections so far)**' in md
    assert 'training steps at batch 256 (ms): resnet_train plain 47.7' in md
    assert 'at the larger batch: resnet_doconv_train_over_plain 1.038' in md
    report.update(complete=True, passed=True)
    assert '**PASSED**' in gpu_check.summary_markdown(report)


def test_profile_rows(cpu_report):
    _, report = cpu_report
    rows = report['sections']['profile']['rows']
    assert [r['network'] for r in rows] == ['ResNet-18 plain', 'ResNet-18 DO-Conv',
                                            'MixNet-S ours', 'MixNet-S timm']
    for row in rows:
        assert row['wall_ms'] > 0 and row['aten_calls'] > 0
        assert row['kernel_ms'] == 0 and row['gpu_busy'] is None  # no GPU kernels on the CPU
    # a DO-Conv network launches more operators than the plain one (the compositions)
    assert rows[1]['aten_calls'] > rows[0]['aten_calls']
