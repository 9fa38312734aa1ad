"""The package's structure: no import cycles, and a pure half that imports
nothing of the shell (threads, environments, I/O, flags, the runtimes).

Imports are read from the source with ``ast`` (module-level and deferred,
inside functions, alike), so nothing here imports the package.
"""

import ast
import os

import pytest

_PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), 'impala_jax')

# The pure half: everything in impala_jax/core, and the config it reads.
PURE = tuple(sorted(
    ['impala_jax.config'] +
    [f'impala_jax.core.{name[:-3]}'
     for name in os.listdir(os.path.join(_PKG, 'core'))
     if name.endswith('.py') and name != '__init__.py'] +
    ['impala_jax.core']))
# Libraries of threads, processes, environments, files and flags.
FORBIDDEN_LIBRARIES = ('threading', 'queue', 'subprocess', 'multiprocessing',
                       'signal', 'absl', 'orbax', 'envpool', 'gymnax',
                       'gymnasium', 'tensorboardX', 'matplotlib', 'csv',
                       'json', 'shutil')


def _modules():
  """``{module name: path}`` of every module in the package."""
  out = {}
  for root, _, files in os.walk(_PKG):
    for name in files:
      if not name.endswith('.py'):
        continue
      path = os.path.join(root, name)
      rel = os.path.relpath(path, os.path.dirname(_PKG))[:-3]
      module = rel.replace(os.sep, '.')
      if module.endswith('.__init__'):
        module = module[:-len('.__init__')]
      out[module] = path
  return out


def _imports(module: str, path: str):
  """Every module name ``module`` imports (absolute names)."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  package = module if path.endswith('__init__.py') else module.rpartition(
      '.')[0]
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parts = package.split('.')
        base = '.'.join(parts[:len(parts) - node.level + 1]
                        + ([base] if base else []))
      names.add(base)
      # ``from impala_jax import learner`` imports a module, too.
      names.update(f'{base}.{alias.name}' for alias in node.names)
  return names


def _graph():
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    graph[module] = {name for name in _imports(module, path)
                     if name in modules and name != module}
  return graph, modules


def test_no_import_cycle_inside_the_package():
  graph, _ = _graph()
  # A package's __init__ importing its own submodules is not a cycle.
  edges = {m: {d for d in deps if not m.startswith(d + '.')}
           for m, deps in graph.items()}
  state, stack, cycles = {}, [], []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for dep in sorted(edges[node]):
      if state.get(dep) == 'open':
        cycles.append(stack[stack.index(dep):] + [dep])
      elif dep not in state:
        visit(dep)
    stack.pop()
    state[node] = 'done'

  for node in sorted(edges):
    if node not in state:
      visit(node)
  assert not cycles, 'import cycles: ' + '; '.join(
      ' -> '.join(c) for c in cycles)


@pytest.mark.parametrize('module', PURE)
def test_the_pure_half_imports_nothing_of_the_shell(module):
  graph, modules = _graph()
  assert module in modules, module
  # Everything it reaches, through our own modules, must be pure too.
  seen, todo = set(), [module]
  while todo:
    m = todo.pop()
    if m in seen:
      continue
    seen.add(m)
    todo.extend(graph[m])
  # Outside core, only config (and the package itself, for its version).
  shell = sorted(m for m in seen
                 if not m.startswith('impala_jax.core')
                 and m not in ('impala_jax.config', 'impala_jax'))
  assert not shell, f'{module} reaches the shell: {shell}'
  libraries = sorted(
      (m, name) for m in seen for name in _imports(m, modules[m])
      if name.split('.')[0] in FORBIDDEN_LIBRARIES)
  assert not libraries, f'{module} reaches {libraries}'
