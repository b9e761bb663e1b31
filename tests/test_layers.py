"""Imports point one way: the command (`pipelines/`) uses connectors, normalizers and storage, none of
which import it; provider connectors leave HTTP (requests, its cache, tenacity) to connectors/http.py.
And no module grows past the size at which it stops being one idea.

Imports are read with `ast`, so one inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOWER_LAYERS = ("connectors", "normalize", "storage")
PROVIDER_MODULES = ("connectors/shopify*.py", "connectors/amazon.py", "connectors/ebay*.py")
HTTP_LIBRARIES = ("requests", "requests_cache", "tenacity")
MAX_LINES = 400
UNLIMITED_FOLDERS = ("tests/", "sandbox/", "bench/")
CLI_MAX_LINES = 250  # the command line: options, subcommands, exit codes; the run lives in pipelines/run.py


def imports(path: Path, root: Path = ROOT) -> list[tuple[str, int, str]]:
    """(imported module, line, the statement as written) for every import in a module, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(root).parent.parts
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, ast.unparse(node)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's own package
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            # `from pipelines import config` imports pipelines.config: name each imported module.
            found += [(f"{base}.{alias.name}" if base else alias.name, node.lineno, ast.unparse(node))
                      for alias in node.names]
    return sorted(found, key=lambda item: item[1])  # ast.walk goes breadth first: back to file order


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def modules(*patterns: str) -> list[Path]:
    return sorted({path for pattern in patterns for path in ROOT.glob(pattern)})


def offences(paths: list[Path], banned: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """One line per import of a banned package (or a submodule of one): where, what, as written."""
    return [f"{path.relative_to(root)}:{line} imports {module.split('.')[0]} ({statement})"
            for path in paths for module, line, statement in imports(path, root)
            if any(within(module, package) for package in banned)]


def test_connectors_normalizers_and_storage_never_import_pipelines():
    paths = modules(*(f"{layer}/**/*.py" for layer in LOWER_LAYERS))
    assert len(paths) > 10  # the glob found the layers
    found = offences(paths, ("pipelines",))
    assert not found, "the command imports these layers, never the other way round:\n" + "\n".join(found)


def test_provider_connectors_leave_http_to_the_http_layer():
    paths = modules(*PROVIDER_MODULES)
    assert {p.name for p in paths} >= {"shopify.py", "shopify_bulk.py", "amazon.py", "ebay.py", "ebay_orders.py"}
    found = offences(paths, HTTP_LIBRARIES)
    assert not found, "sessions, timeouts, the cache and retries belong to connectors/http.py:\n" + "\n".join(found)


def test_the_import_reader_sees_every_form_of_import(tmp_path):
    module = tmp_path / "connectors" / "probe.py"
    module.parent.mkdir()
    module.write_text("import pipelines\nimport pipelines.config as c\nfrom pipelines.config import Settings\n"
                      "from pipelines import config\nfrom requests.auth import AuthBase\n"
                      "def late():\n    import tenacity.wait\n    from .. import pipelines\n"
                      "from . import http\nimport pipelines_extra\n")
    names = [name for name, _, _ in imports(module, tmp_path)]
    assert names == ["pipelines", "pipelines.config", "pipelines.config.Settings", "pipelines.config",
                     "requests.auth.AuthBase", "tenacity.wait", "pipelines", "connectors.http", "pipelines_extra"]
    assert len(offences([module], ("pipelines",), tmp_path)) == 5  # not connectors.http nor pipelines_extra
    assert offences([module], HTTP_LIBRARIES, tmp_path) == [
        "connectors/probe.py:5 imports requests (from requests.auth import AuthBase)",
        "connectors/probe.py:7 imports tenacity (import tenacity.wait)",
    ]


def tracked_python_files() -> list[str]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "*.py"], cwd=ROOT, capture_output=True, text=True,
                                check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [name for name in listed.stdout.split("\0") if name]


def test_no_module_outside_tests_sandbox_and_bench_is_over_400_lines():
    files = [f for f in tracked_python_files() if not f.startswith(UNLIMITED_FOLDERS) and (ROOT / f).exists()]
    assert files
    sizes = {f: len((ROOT / f).read_text().splitlines()) for f in files}
    over = [f"{f}: {n} lines" for f, n in sorted(sizes.items()) if n > MAX_LINES]
    assert not over, f"modules over {MAX_LINES} lines (split them where the work divides):\n" + "\n".join(over)


def test_the_command_line_module_is_only_the_command_line():
    lines = len((ROOT / "pipelines" / "run_pipeline.py").read_text().splitlines())
    assert lines < CLI_MAX_LINES, f"pipelines/run_pipeline.py has {lines} lines; move what is not the CLI out"


def loaded_after(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of `names` are in sys.modules after `code` runs in a fresh interpreter."""
    probe = f"import sys\n{code}\nprint(' '.join(n for n in {names!r} if n in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_command_line_loads_the_run_only_to_run():
    """--help, a usage or settings error: no HTTP, no pyarrow, none of the run's modules (start-up time)."""
    heavy = ("pyarrow", "numpy", "requests", "tenacity", "pipelines.run", "storage.destination", "normalize.models",
             "connectors.shopify", "connectors.amazon", "connectors.ebay")
    assert loaded_after("import pipelines.run_pipeline", heavy) == []


def test_a_stream_loads_only_its_own_provider_and_records():
    """A Shopify products run imports no other provider's code, nor pyarrow, the Parquet writer and
    the Delta writer before it has something to read or write."""
    others = ("connectors.amazon", "connectors.ebay", "connectors.ebay_orders", "connectors.shopify_orders",
              "normalize.amazon", "normalize.ebay", "normalize.ebay_orders", "normalize.shopify_orders",
              "storage.delta", "pyarrow", "storage.parquet", "storage.schemas")
    code = "import pipelines.run\nfrom pipelines.streams import stream_of\nstream_of('shopify', 'products')"
    assert "connectors.shopify" in loaded_after(code, ("connectors.shopify",))
    assert loaded_after(code, others) == []
