"""The rooms of the house: no import cycle, and inference never loads training."""

import ast
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hive"


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def hive_imports(path: pathlib.Path, modules: set[str]) -> set[str]:
  """Every hive module `path` imports, at module level or inside functions."""
  found = set()
  package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # Relative import.
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                        + ([base] if base else []))
      names = [base] + [f"{base}.{alias.name}" for alias in node.names]
    else:
      continue
    for name in names:
      # "from hive import workdir" names the module hive.workdir; "from hive.x import f" hive.x.
      while name and name not in modules:
        name = name.rpartition(".")[0]
      if name and name != "hive":
        found.add(name)
  return found - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
  files = sorted(PACKAGE.rglob("*.py"))
  modules = {module_name(f) for f in files}
  return {module_name(f): hive_imports(f, modules) for f in files}


def find_cycle(graph):
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_the_walker_sees_function_level_imports_and_cycles():
  graph = import_graph()
  assert "hive.encoder" in graph["hive.centring"]  # A module-level import.
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_hive_modules():
  assert find_cycle(import_graph()) is None


def test_inference_modules_never_import_training():
  graph = import_graph()
  training = {"hive.train", "hive.main", "hive.losses", "hive.augment"}
  inference = ["hive.encoder", "hive.evaluate", "hive.embed", "hive.export", "hive.voiceid",
               "hive.voiceid.commands", "hive.evaluator", "hive.centring"]

  def reach(module, seen):
    for nxt in graph.get(module, ()):
      if nxt not in seen:
        seen.add(nxt)
        reach(nxt, seen)
    return seen

  for module in inference:
    assert not reach(module, set()) & training, module


def test_importing_the_encoder_loads_no_training_or_dataset_libraries():
  code = ("import hive.encoder, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in "
          "('optax', 'tensorflow_datasets', 'clu', 'tensorflow') or m == 'hive.train'))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "[]"
