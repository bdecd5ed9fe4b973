"""One build of the fixture study per test session (the report tests share it)."""

from __future__ import annotations

import time
import warnings

import pytest

from tests.report.fixtures.make_study import make_study


@pytest.fixture(scope="session")
def study_root(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("study") / "results")


@pytest.fixture(scope="session")
def built(study_root, tmp_path_factory):
    from spattern.report import build_report

    out = tmp_path_factory.mktemp("a") / "build"
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = build_report([study_root], out)
    return {"paths": paths, "out": out, "seconds": time.perf_counter() - t0, "warnings": [str(w.message) for w in caught]}


@pytest.fixture(scope="session")
def built_again(study_root, tmp_path_factory):
    from spattern.report import build_report

    out = tmp_path_factory.mktemp("b") / "build"
    return {"paths": build_report([study_root], out, html=False), "out": out}


@pytest.fixture(scope="session")
def partial(built, tmp_path_factory):
    """A study without benchmarks and significance, built into a copy of a complete build's folder."""
    import shutil

    from spattern.report import build_report

    part = make_study(tmp_path_factory.mktemp("part") / "results", complete=False)
    out = tmp_path_factory.mktemp("c") / "build"
    shutil.copytree(built["out"], out, dirs_exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = build_report([part], out)
    return {"paths": paths, "out": out, "warnings": [str(w.message) for w in caught]}
