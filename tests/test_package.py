"""The installable package: a wheel built from the sources, installed into a
fresh virtual environment outside the repository, gives working console
commands and its package data (issue: fits the researcher's toolbox)."""

import configparser
import os
import shutil
import site
import subprocess
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _console_commands():
  parser = configparser.ConfigParser()
  parser.read(os.path.join(_REPO, 'setup.cfg'))
  lines = parser['options.entry_points']['console_scripts'].strip()
  return [line.split('=')[0].strip() for line in lines.splitlines()
          if line.strip()]


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """A venv with the wheel installed (no ``-e``); its dependencies come from
  this test environment's site-packages through a ``.pth`` path entry (a
  path entry: the ``.pth`` files there, the editable install's among them,
  are not run)."""
  tmp = tmp_path_factory.mktemp('package')
  src = tmp / 'src'
  os.makedirs(src)
  for name in ('setup.cfg', 'pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(_REPO, name), src / name)
  ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
  for name in ('impala_jax', 'experiments'):
    shutil.copytree(os.path.join(_REPO, name), src / name, ignore=ignore)
  wheels = tmp / 'wheels'
  build = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w',
       str(wheels), str(src)], capture_output=True, text=True, timeout=600)
  assert build.returncode == 0, build.stdout + build.stderr
  (wheel,) = [p for p in os.listdir(wheels) if p.endswith('.whl')]
  venv = tmp / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)],
                 check=True, timeout=120)
  python = str(venv / 'bin' / 'python')
  install = subprocess.run(
      [sys.executable, '-m', 'pip', '--python', python, 'install', '-q',
       '--no-deps', '--no-index', str(wheels / wheel)],
      capture_output=True, text=True, timeout=300)
  assert install.returncode == 0, install.stdout + install.stderr
  purelib = subprocess.run(
      [python, '-c', 'import sysconfig; print(sysconfig.get_paths()'
       '["purelib"])'], capture_output=True, text=True, check=True).stdout
  with open(os.path.join(purelib.strip(), '_test_deps.pth'), 'w') as f:
    f.write('\n'.join(site.getsitepackages()) + '\n')
  work = tmp / 'elsewhere'   # not the repository: no experiments/ here
  os.makedirs(work)
  env = {k: v for k, v in os.environ.items()
         if k not in ('PYTHONPATH', 'XLA_FLAGS')}
  return {'venv': venv, 'python': python, 'work': str(work), 'env': env,
          'wheel': wheel}


def _run(installed, args, timeout=300):
  return subprocess.run(args, cwd=installed['work'], env=installed['env'],
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_wheel_imports_from_the_install_with_its_data(installed):
  proc = _run(installed, [installed['python'], '-c', (
      'import impala_jax, impala_jax.programs.train as t; '
      'from impala_jax import scores, reference_runs; '
      'print(impala_jax.__file__); print(t.__file__); '
      'print(len(scores.games("atari57")), len(scores.games("dmlab30"))); '
      'print(sorted(reference_runs.published("minatar")))')])
  assert proc.returncode == 0, proc.stderr
  package_file, program_file, counts, minatar = proc.stdout.splitlines()
  for path in (package_file, program_file):
    assert path.startswith(str(installed['venv'])), path
  assert counts == '57 30'
  assert 'Breakout-MinAtar' in minatar


@pytest.mark.slow
def test_every_console_command_answers_help(installed):
  commands = _console_commands()
  assert set(commands) >= {'impala-train', 'impala-evaluate', 'impala-plot',
                           'impala-sweep', 'impala-bench'}
  for command in commands:
    path = str(installed['venv'] / 'bin' / command)
    assert os.path.exists(path), command
    args = [path, 'vtrace', '--help'] if command == 'impala-bench' else [
        path, '--help']
    proc = _run(installed, args, timeout=120)
    out = proc.stdout + proc.stderr
    # absl's --help exits 1 after printing the program's doc and flags.
    assert proc.returncode in (0, 1), (command, out)
    assert 'Traceback' not in out, (command, out)
    assert '  --' in out, (command, out)   # the program's own flags listed
  bench = _run(installed, [str(installed['venv'] / 'bin' / 'impala-bench'),
                           'nope'])
  assert bench.returncode == 2
  assert bench.stderr.startswith("error: unknown benchmark 'nope'")


@pytest.mark.slow
def test_installed_train_runs_a_few_cartpole_updates(installed):
  logdir = os.path.join(installed['work'], 'run')
  proc = _run(installed, [
      str(installed['venv'] / 'bin' / 'impala-train'), '--preset=cartpole',
      '--total_frames=1280', f'--logdir={logdir}', '--noprogress'])
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert 'done: ' in proc.stdout
  assert os.path.exists(os.path.join(logdir, 'metrics.csv'))
  assert os.path.isdir(os.path.join(logdir, 'checkpoints'))
