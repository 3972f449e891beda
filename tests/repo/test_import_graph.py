"""The import graph of the package: no cycles, one direction, names compared only in models/objectives.

Every .py file under objectives/, models/, data/ and launch/ is parsed (not imported) and
every `import objectax...` / `from objectax... import ...` in it, function-level ones too,
is an edge from that module to the module it names. `from objectax.x import y` is an edge
to objectax.x.y when that is a module of the repo, else to objectax.x.

(a) No cycle between files.
(b) The top-level packages import in one direction: launch -> data -> objectives -> models
    (a package may import itself and any package later in that list, never an earlier one).
(c) Outside models/ and objectives/, no comparison (`==`, `!=`, `in`, ...) against the
    literal name of a registered architecture or objective: what differs between
    architectures or objectives lives with them, behind their registries.
"""
import ast
import os

from objectax.models import registry as arch_registry
from objectax.objectives import registry as objective_registry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ORDER = ("launch", "data", "objectives", "models")  # imports point rightwards only
NAME_FREE = ("launch", "data")  # packages that must not compare against a registered name


def _modules() -> dict[str, str]:
  """objectax module name -> file path, for every .py file of the four packages."""
  found = {}
  for package in ORDER:
    for root, dirs, files in os.walk(os.path.join(REPO, package)):
      dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
      for name in sorted(files):
        if not name.endswith(".py"):
          continue
        path = os.path.join(root, name)
        parts = os.path.relpath(path, REPO)[:-len(".py")].split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        found[".".join(["objectax", *parts])] = path
  return found


MODULES = _modules()


def _is_package(module: str) -> bool:
  return MODULES.get(module, "").endswith("__init__.py")


def _resolve(module: str) -> str | None:
  """The longest prefix of `module` that is a module of the four packages."""
  parts = module.split(".")
  while len(parts) > 2:
    name = ".".join(parts)
    if name in MODULES:
      return name
    parts.pop()
  return ".".join(parts) if ".".join(parts) in MODULES else None


def _imports(module: str, tree: ast.AST) -> set[str]:
  """Modules of the four packages that `module` imports anywhere in its body."""
  edges = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: resolve against this module's package
        package = module.split(".") if _is_package(module) else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
      targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                 for alias in node.names]
    else:
      continue
    for target in targets:
      if target.startswith("objectax."):
        resolved = _resolve(target)
        if resolved and resolved != module:
          edges.add(resolved)
  return edges


def _trees() -> dict[str, ast.AST]:
  trees = {}
  for module, path in MODULES.items():
    with open(path, encoding="utf-8") as f:
      trees[module] = ast.parse(f.read(), filename=path)
  return trees


TREES = _trees()
GRAPH = {module: _imports(module, tree) for module, tree in TREES.items()}


def _package(module: str) -> str:
  return module.split(".")[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One cycle (a closed path of modules) per strongly connected component with a cycle."""
  index, low, on_stack, stack, components = {}, {}, set(), [], []

  def strongconnect(v):  # Tarjan; the graph is small, recursion is fine
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        strongconnect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        components.append(set(component))

  for v in sorted(graph):
    if v not in index:
      strongconnect(v)
  cycles = []
  for component in components:  # a shortest cycle through the component's first module
    start = min(component)
    paths, seen = [[start]], {start}
    while paths:
      path = paths.pop(0)
      nxt = sorted(w for w in graph[path[-1]] if w in component)
      if start in nxt:
        cycles.append(path + [start])
        break
      for w in nxt:
        if w not in seen:
          seen.add(w)
          paths.append(path + [w])
  return cycles


def test_the_files_are_found_and_the_resolution_is_right():
  assert "objectax.launch.train" in MODULES and "objectax.models.registry" in MODULES
  assert _resolve("objectax.models.registry.ConfigError") == "objectax.models.registry"
  tree = ast.parse("from objectax.models import registry, ModelThing\n"
                   "def f():\n  import objectax.objectives.registry\n")
  assert _imports("objectax.launch.x", tree) == {
      "objectax.models.registry", "objectax.models", "objectax.objectives.registry"}
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycle_between_files():
  cycles = _cycles(GRAPH)
  assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_packages_import_in_one_direction():
  rank = {p: i for i, p in enumerate(ORDER)}
  bad = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
               if rank[_package(t)] < rank[_package(m)])
  assert not bad, (f"imports must go {' -> '.join(ORDER)} only:\n" + "\n".join(bad))


def _literals(node: ast.AST) -> list[str]:
  """String constants of a comparison operand, also inside a literal tuple/list/set."""
  if isinstance(node, ast.Constant) and isinstance(node.value, str):
    return [node.value]
  if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
    return [s for elt in node.elts for s in _literals(elt)]
  return []


def test_launch_and_data_compare_no_architecture_or_objective_names():
  names = set(arch_registry.ARCHITECTURES.names()) | set(objective_registry.OBJECTIVES.names())
  assert {"causal_decoder", "encoder_decoder", "span_corruption", "full_lm"} <= names
  found = []
  for module, tree in TREES.items():
    if _package(module) not in NAME_FREE:
      continue
    for node in ast.walk(tree):
      if isinstance(node, ast.Compare):
        hits = sorted({s for operand in [node.left, *node.comparators]
                       for s in _literals(operand) if s in names})
        if hits:
          path = os.path.relpath(MODULES[module], REPO)
          found.append(f"{path}:{node.lineno}: {ast.unparse(node)}  ({', '.join(hits)})")
  assert not found, ("comparisons against architecture/objective names outside models/ and "
                     "objectives/ (move the difference behind the registry):\n"
                     + "\n".join(found))
