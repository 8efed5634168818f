"""minitest.py: runs this folder's tests where pytest is not installed (the GPU machine may lack it).

It stands in for the part of pytest the tests use: importorskip, skip (module level too), autouse fixtures
written as generators, mark.parametrize, warns(match=), approx(rel=), the tmp_path argument, and -k. Ends with
pytest's closing line ("N passed, N failed, N skipped"); the exit status is 1 when anything failed.

    python3 tests/python/minitest.py [-k SUBSTRING] tests/python/test_*.py"""

import contextlib
import importlib.util
import inspect
import itertools
import math
import re
import sys
import tempfile
import traceback
import types
import warnings
from pathlib import Path


class Skip(Exception):
    pass


def importorskip(name):
    try:
        return __import__(name)
    except ImportError as e:
        raise Skip(f"{name}: {e}")


def skip(msg="", allow_module_level=False):
    raise Skip(msg)


def fixture(fn=None, autouse=False):
    def mark(f):
        f._mini_fixture = autouse
        return f
    return mark(fn) if fn is not None else mark


def _parametrize(names, values):
    names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)

    def mark(f):
        f._mini_params = getattr(f, "_mini_params", []) + [(names, list(values))]
        return f
    return mark


@contextlib.contextmanager
def warns(category, match=None):
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        yield got
    hits = [w for w in got if issubclass(w.category, category) and (match is None or re.search(match, str(w.message)))]
    if not hits:
        raise AssertionError(f"no {category.__name__} matching {match!r} (got {[str(w.message) for w in got]})")


class approx:
    def __init__(self, want, rel=1e-6, abs=1e-12):
        self.want, self.rel, self.abs = want, rel, abs

    def _close(self, a, b):
        return math.isclose(a, b, rel_tol=self.rel, abs_tol=self.abs)

    def __eq__(self, got):
        if isinstance(self.want, (list, tuple)):
            return len(got) == len(self.want) and all(self._close(a, b) for a, b in zip(got, self.want))
        return self._close(got, self.want)

    def __repr__(self):
        return f"approx({self.want!r}, rel={self.rel})"


def install():
    mod = types.ModuleType("pytest")
    mod.importorskip, mod.skip, mod.fixture, mod.warns, mod.approx = importorskip, skip, fixture, warns, approx
    mod.mark = types.SimpleNamespace(parametrize=_parametrize)
    sys.modules["pytest"] = mod


def _cases(fn):
    groups = getattr(fn, "_mini_params", [])
    if not groups:
        yield "", {}
        return
    for combo in itertools.product(*[[(names, v) for v in values] for names, values in groups]):
        kw, ids = {}, []
        for names, v in combo:
            vals = v if len(names) > 1 else (v,)
            kw.update(zip(names, vals))
            ids.append("-".join(str(x)[:20] for x in vals))
        yield "[" + "-".join(ids) + "]", kw


def run_file(path, pattern, counts):
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(Path(path).parent))
    try:
        spec.loader.exec_module(mod)
    except Skip as e:
        print(f"SKIPPED {path}: {e}")
        counts["skipped"] += 1
        return
    autouse = [f for f in vars(mod).values() if callable(f) and getattr(f, "_mini_fixture", False)]
    for name, fn in list(vars(mod).items()):
        if not name.startswith("test_") or not callable(fn):
            continue
        for suffix, kw in _cases(fn):
            tid = f"{Path(path).name}::{name}{suffix}"
            if pattern and pattern not in tid:
                continue
            gens = [f() for f in autouse]
            try:
                for g in gens:
                    next(g)
                with tempfile.TemporaryDirectory() as tmp:
                    if "tmp_path" in inspect.signature(fn).parameters:
                        kw = {**kw, "tmp_path": Path(tmp)}
                    fn(**kw)
                print(f"PASSED {tid}")
                counts["passed"] += 1
            except Skip as e:
                print(f"SKIPPED {tid}: {e}")
                counts["skipped"] += 1
            except Exception:
                print(f"FAILED {tid}\n{traceback.format_exc()}")
                counts["failed"] += 1
            finally:
                for g in reversed(gens):
                    with contextlib.suppress(StopIteration):
                        next(g)


def main(argv):
    pattern = None
    if len(argv) >= 2 and argv[0] == "-k":
        pattern, argv = argv[1], argv[2:]
    install()
    counts = dict(passed=0, failed=0, skipped=0)
    for path in argv:
        run_file(path, pattern, counts)
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
