"""Where the project's pieces live, so the host and the VM guest agree on paths."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KMOD_SRC = PROJECT_ROOT / "kmod"
BPF_SRC = PROJECT_ROOT / "bpf"
BUILD_DIR = PROJECT_ROOT / "build"
RESULTS_DIR = PROJECT_ROOT / "results"
SCHEMA = RESULTS_DIR / "schema.json"


def kmod_build_dir(release: str) -> Path:
    return BUILD_DIR / "kmod" / release
