"""Benchmarks never import the tests: bench/ may be imported by tests, never the other way round."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_MODULES = {path.stem for path in (ROOT / "tests").glob("*.py")}


def test_no_bench_module_imports_a_test_module_or_puts_tests_on_the_path():
    offenders = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: import {name}" for name in names if name.split(".")[0] in TEST_MODULES | {"tests"}]
        if '"tests"' in source:
            offenders.append(f"{path.name}: puts tests/ on sys.path")
    assert offenders == []
