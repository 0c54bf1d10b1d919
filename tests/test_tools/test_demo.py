"""The classification part of the demo (`make demo`) end to end on a shortened
schedule: train, evaluate, fold, re-evaluate, export ONNX, write summary.json
(the dense part: test_demo_dense.py)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_demo_short_run(tmp_path):
    out = subprocess.run(
        [sys.executable, 'tools/demo/run_demo.py', '--work-dir', str(tmp_path), '--tasks', 'cls',
         '--epochs', '1',
         '--min-top1', '0', '--models', 'bsconvs_resnet8', 'mixconv357_mobilenetv1_w0.25'],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = json.loads((tmp_path / 'summary.json').read_text())
    assert [r['model'] for r in rows] == ['bsconvs_resnet8', 'mixconv357_mobilenetv1_w0.25']
    for row in rows:
        assert row['task'] == 'cls'
        assert set(row) >= {'model', 'top1', 'top1_folded', 'onnx_max_abs_diff', 'params',
                            'train_seconds'}
        assert row['top1'] == row['top1_folded']
        assert 0 <= row['onnx_max_abs_diff'] < 1e-3
        assert row['params'] > 0 and row['train_seconds'] > 0
        assert (tmp_path / row['model'] / f"{row['model']}.onnx").is_file()
    # the BSConv-S model trained with the regulariser in its loss, the others without
    assert rows[0]['final_loss_ortho'] > 0
    assert rows[1]['final_loss_ortho'] is None


def _run_demo_module():
    spec = importlib.util.spec_from_file_location('run_demo',
                                                  REPO / 'tools' / 'demo' / 'run_demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def test_jobs_option(capsys):
    demo = _run_demo_module()
    assert demo.parse_args([]).jobs == 2 and demo.parse_args(['--jobs', '1']).jobs == 1
    for bad in ('0', '-1'):
        with pytest.raises(SystemExit):
            demo.parse_args(['--jobs', bad])
        assert f'--jobs must be >= 1 (1: one model at a time), got {bad}' in capsys.readouterr().err


def test_progress_lines_beside_the_dense_pipelines(capsys):
    """While the dense pipelines print, classification reports a line per quarter
    in the dense pipelines' format instead of a progress bar."""
    demo = _run_demo_module()
    runner = type('FakeRunner', (), dict(max_epochs=2, train_dataloader=[0] * 4))()
    hook = demo.ProgressHook('m', lines=True)
    hook.before_train(runner)
    for _ in range(8):
        hook.after_train_iter(runner, 0)
    hook.after_train(runner)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ['[m] training 2 epochs (8 iterations)'] + [
        f'[m] training {p:3d}% ({i}/8 iterations)' for p, i in ((25, 2), (50, 4), (75, 6),
                                                                (100, 8))]
