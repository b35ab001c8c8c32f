"""The module's C is kernel style: checkpatch.pl --strict, from Debian's linux-source."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nlperf.paths import BUILD_DIR, KMOD_SRC

CHECKPATCH_FILES = ("scripts/checkpatch.pl", "scripts/spelling.txt",
                    "scripts/const_structs.checkpatch")


@pytest.fixture(scope="session")
def checkpatch() -> Path:
    """checkpatch.pl and its data files, unpacked once into build/checkpatch/."""
    out = BUILD_DIR / "checkpatch"
    script = out / "scripts" / "checkpatch.pl"
    if script.exists():
        return script
    tarballs = sorted(Path("/usr/src").glob("linux-source-*.tar.xz"))
    if not tarballs:
        pytest.skip("linux-source is not installed (make setup installs it)")
    prefix = tarballs[-1].name.removesuffix(".tar.xz")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xJf", str(tarballs[-1]), "-C", str(out), "--strip-components=1",
                    *(f"{prefix}/{f}" for f in CHECKPATCH_FILES)], check=True)
    return script


@pytest.mark.parametrize("source", sorted(p.name for p in KMOD_SRC.rglob("*.[ch]")))
def test_checkpatch_strict_clean(checkpatch: Path, source: str) -> None:
    path = next(KMOD_SRC.rglob(source))
    proc = subprocess.run(["perl", str(checkpatch), "--strict", "--no-tree", "--no-summary",
                           "--terse", "-f", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
