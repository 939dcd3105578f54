"""Virtual environments the slow tests build with uv from what an image declares (the Bento's
requirements, the pipelines Dockerfile's install): nothing from the development venv. They cost minutes
the first time (downloads) and are kept under ``HELIOS_TEST_CACHE`` (default ``~/.cache/helios-tests``),
keyed by a hash of what they are built from and this interpreter's version, so later runs reuse them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path


def cached_venv(name: str, built_from: bytes, install_args: list[str], cwd: Path | None = None) -> Path:
    """A venv of this interpreter with `uv pip install <install_args>` (run in ``cwd``), built once per
    ``built_from``."""
    key = hashlib.sha256(built_from + sys.version.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("HELIOS_TEST_CACHE") or Path.home() / ".cache" / "helios-tests")
    venv = cache / f"{name}-{key}"
    if (venv / ".complete").exists():
        return venv
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "--quiet", "--clear", "--python", sys.executable, str(venv)], check=True, timeout=300)
    subprocess.run([*uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), *install_args],
                   cwd=cwd, check=True, timeout=1800)
    (venv / ".complete").touch()
    return venv
