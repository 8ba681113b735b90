"""Shared fixtures: spec factories and paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def make_spec(**overrides: Any) -> dict[str, Any]:
    """A minimal valid spec (wire form) with overrides merged in one level deep per key."""
    spec: dict[str, Any] = {"model": {"uri": "hf://org/model"}}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def load_example(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.fixture
def root() -> Path:
    return ROOT
