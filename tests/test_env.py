"""env.json's record of the code's revision (spattern.utils.env.git_revision): the checkout's git, or the
revision a copy sent to another machine was stamped with (scripts/stamp_source.sh)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from spattern.utils.env import SOURCE_REVISION_VAR, capture_env, git_revision

ROOT = Path(__file__).resolve().parents[1]


def test_the_stamped_revision_wins_over_the_copys_own_git(monkeypatch):
    monkeypatch.setenv(SOURCE_REVISION_VAR, "0123abcd+dirty")
    assert git_revision() == {"revision": "0123abcd", "dirty": True, "from": SOURCE_REVISION_VAR}
    monkeypatch.setenv(SOURCE_REVISION_VAR, "0123abcd")
    assert capture_env()["git"]["dirty"] is False


def test_without_a_stamp_the_checkouts_git_is_asked(monkeypatch, tmp_path):
    monkeypatch.delenv(SOURCE_REVISION_VAR, raising=False)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("a")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_revision(tmp_path) == {"revision": head, "dirty": False}
    (tmp_path / "f").write_text("b")
    assert git_revision(tmp_path) == {"revision": head, "dirty": True}
    assert git_revision(tmp_path / "not-a-repo")["revision"] is None
