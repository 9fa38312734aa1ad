"""``experiments.gpu_suite --smoke``: every section runs at tiny sizes on the
CPU and writes the JSON fields and the Markdown table README names."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_smoke_writes_every_section(tmp_path):
  out = str(tmp_path / 'suite.json')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.gpu_suite', '--smoke',
       f'--json={out}'], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
  with open(out) as f:
    results = json.load(f)
  sections = results['sections']
  assert set(sections) == {'learner', 'pipeline', 'anakin', 'pong_learning'}
  assert {(r['torso'], r['B']) for r in sections['learner']['rows']} == {
      ('shallow', 2), ('deep', 2)}
  for row in sections['learner']['rows']:
    assert row['fps'] > 0 and row['fps_with_transfer'] > 0
  assert sections['pipeline']['rows'][0]['layout'] == 'shared'
  assert sections['pipeline']['rows'][0]['frames_per_s'] > 0
  for name in ('cartpole', 'breakout_minatar'):
    anakin = sections['anakin'][name]
    assert anakin['best_steps_per_s'] > 0
    assert anakin['saturation_batch'] == 8
  pong = sections['pong_learning']
  assert pong['frames'] > 0 and 'final_return' in pong
  with open(os.path.splitext(out)[0] + '.md') as f:
    table = f.read()
  for heading in ('| torso | T | B |', '| pipeline layout |', '| Anakin |',
                  'Pong-v5 from pixels'):
    assert heading in table, table
