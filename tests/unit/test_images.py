"""Dockerfiles parse, run as non-root, and start exactly what the builders and chart expect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tandem.plan.engine import ENGINE_COMMAND
from tandem.render.router import ROUTER_COMMAND

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
INSTRUCTIONS = {
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "WORKDIR",
    "USER",
    "EXPOSE",
    "ENTRYPOINT",
    "CMD",
    "LABEL",
    "HEALTHCHECK",
    "SHELL",
    "VOLUME",
    "STOPSIGNAL",
    "ONBUILD",
}


def parse(path: Path) -> list[tuple[str, str]]:
    """Dockerfile instructions (continuations joined, comments dropped)."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        assert word.upper() in INSTRUCTIONS, f"{path.name}: unknown instruction {word!r}"
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, f"{path.name}: dangling continuation"
    return out


def entrypoint(path: Path) -> list[str]:
    entries = [json.loads(rest) for word, rest in parse(path) if word == "ENTRYPOINT"]
    assert len(entries) == 1, path.name
    value: list[str] = entries[0]
    return value


def final_user(path: Path) -> str:
    users = [rest for word, rest in parse(path) if word == "USER"]
    assert users, f"{path.name} must switch to a non-root USER"
    return users[-1]


@pytest.mark.parametrize("name", ["operator", "router", "engine"])
def test_parses_and_is_non_root(name: str) -> None:
    path = IMAGES / f"{name}.Dockerfile"
    instructions = parse(path)
    assert instructions[0][0] in ("FROM", "ARG")
    user = final_user(path)
    assert not re.match(r"^(root|0)(:|$)", user), user


def test_engine_entrypoint_matches_builder() -> None:
    assert entrypoint(IMAGES / "engine.Dockerfile") == list(ENGINE_COMMAND)


def test_router_entrypoint_matches_builder() -> None:
    assert entrypoint(IMAGES / "router.Dockerfile") == ROUTER_COMMAND


def test_operator_entrypoint_matches_chart() -> None:
    text = (ROOT / "charts/tandem/templates/deployment.yaml").read_text()
    command = re.search(r"command: (\[.*\])", text)
    assert command is not None
    assert entrypoint(IMAGES / "operator.Dockerfile") == yaml.safe_load(command.group(1))


def test_engine_pins_compatible_versions() -> None:
    text = (IMAGES / "engine.Dockerfile").read_text()
    assert "VLLM_VERSION=v0.32.0" in text
    assert "LMCACHE_VERSION=0.5.6" in text
    assert "NIXL_VERSION=1.5.1" in text


def test_router_image_has_router_extra() -> None:
    assert '".[router]"' in (IMAGES / "router.Dockerfile").read_text()


def test_engine_image_proves_cuda_paths_with_its_pins() -> None:
    """The build runs images/engine_check.py --cuda with the Dockerfile's own pins."""
    text = (IMAGES / "engine.Dockerfile").read_text()
    assert "COPY images/engine_check.py" in text
    assert re.search(r"engine_check\.py --cuda", text)
    check = (IMAGES / "engine_check.py").read_text()
    for pin in ('default="0.32.0"', 'default="0.5.6"', 'default="1.5.1"'):
        assert pin in check
