"""Cache keys carry the version of the code behind them (``tinylm.artifacts.cache``): a changed line in a named
module, or in any file of a named package, gives a new key; unchanged code gives the same key anywhere."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest

from tinylm.artifacts.cache import cache_key, code_version, digest


def test_a_cache_key_changes_when_the_code_that_computes_it_changes(tmp_path):
    path = tmp_path / "scoring_under_test.py"
    path.write_text("def score(x):\n    return x\n")
    spec = importlib.util.spec_from_file_location("scoring_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before, key = code_version(module), cache_key("model", 3, modules=(module,))
    assert code_version(module) == before and cache_key("model", 3, modules=(module,)) == key  # stable
    path.write_text("def score(x):\n    return 2 * x\n")  # the scoring code changes
    assert code_version(module) != before
    assert cache_key("model", 3, modules=(module,)) != key
    assert cache_key("model", 4, modules=(module,)) != cache_key("model", 3, modules=(module,))
    assert code_version("tinylm.model.scoring") == code_version(sys.modules["tinylm.model.scoring"])
    with pytest.raises(ValueError, match="modules"):
        cache_key("model", 3, modules=())  # a key without a code version is what let stale numbers through


def test_a_package_stands_for_every_file_under_it(tmp_path, monkeypatch):
    package = tmp_path / "package_under_test"
    (package / "inner").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "inner" / "__init__.py").write_text("")
    (package / "inner" / "math.py").write_text("def f():\n    return 1\n")
    (package / "task.yaml").write_text("task: a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    versions = [code_version("package_under_test")]
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "inner.cpython.pyc").write_bytes(b"compiled")  # not source: no new version
    assert code_version("package_under_test") == versions[0]
    for path, text in [(package / "inner" / "math.py", "def f():\n    return 2\n"),  # a nested module changes
                       (package / "task.yaml", "task: b\n"),  # package data (a task definition) changes
                       (package / "added.py", "X = 1\n")]:  # a module added later counts unnamed
        path.write_text(text)
        versions.append(code_version("package_under_test"))
    assert len(set(versions)) == 4
    # a module named on its own is its file only: a sibling's change does not reach it
    inner = code_version("package_under_test.inner.math")
    (package / "added.py").write_text("X = 2\n")
    assert code_version("package_under_test.inner.math") == inner != code_version("package_under_test")
    for name in [n for n in sys.modules if n.startswith("package_under_test")]:
        del sys.modules[name]


def test_digest_is_the_same_for_the_same_data_in_any_order():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1}) != digest({"a": 1, "b": [2, 1]})
    assert len(digest([1], 12)) == 12
