"""The Setup paragraph names the code's revision when the results share one and counts them otherwise
(the environment table's CSV lists each result's own revision)."""

from __future__ import annotations

from spattern.report.numbers import _env


class _Study:
    def __init__(self, revisions: list[tuple[str, bool]]) -> None:
        self._envs = [({"device": "cpu", "python": "3.11.7", "git": {"revision": r, "dirty": d}}, None)
                      for r, d in revisions]

    def envs(self):
        return self._envs


def test_one_revision_is_named():
    assert _env(_Study([("a" * 40, False)] * 3))["git"] == "revision " + "a" * 10


def test_many_revisions_are_counted_not_listed():
    revs = [("a" * 40, False), ("a" * 40, True), ("b" * 40, False)]
    assert _env(_Study(revs))["git"] == "3 git revisions"  # a dirty copy of a revision counts apart


def test_no_revision_leaves_the_value_out():
    assert "git" not in _env(_Study([]))
