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


def test_jobs_option(capsys):
    spec = importlib.util.spec_from_file_location('run_demo',
                                                  REPO / 'tools' / 'demo' / 'run_demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.parse_args([]).jobs == 2 and demo.parse_args(['--jobs', '1']).jobs == 1
    for bad in ('0', '-1'):
        with pytest.raises(SystemExit):
            demo.parse_args(['--jobs', bad])
        assert f'--jobs must be >= 1 (1: one model at a time), got {bad}' in capsys.readouterr().err
