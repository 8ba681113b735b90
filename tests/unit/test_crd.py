"""The committed CRDs are exactly what the models generate, and the schema is structural."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from tandem.api.crd import CRD_FILE, all_crds, inference_service_crd
from tandem.api.v1alpha1 import RULES
from tandem.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _schema() -> dict[str, Any]:
    return inference_service_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for k, v in node.get("properties", {}).items():
            out += _walk(v, f"{path}.{k}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_committed_crds_match_generated() -> None:
    result = CliRunner().invoke(
        main,
        ["crds", "--check", "--out", str(ROOT / "crds"), "--out", str(ROOT / "charts/tandem/crds")],
    )
    assert result.exit_code == 0, result.output


def test_chart_crds_identical_to_top_level() -> None:
    top = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_text() for p in (ROOT / "charts/tandem/crds").glob("*.yaml")}
    assert top == chart
    assert set(top) == set(all_crds())


def test_check_detects_drift(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["crds", "--out", str(tmp_path)]).exit_code == 0
    target = tmp_path / CRD_FILE
    target.write_text(target.read_text().replace("maximum: 64", "maximum: 65"))
    result = runner.invoke(main, ["crds", "--check", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "out of date" in result.output


def test_schema_is_structural() -> None:
    text = json.dumps(_schema())
    for forbidden in ("$ref", "$defs", "anyOf", "oneOf", "allOf", '"const"', '"title"'):
        assert forbidden not in text, forbidden
    for path, node in _walk(_schema()):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert node.get("additionalProperties") is not False, path
        if "properties" in node:
            assert node["type"] == "object", path
            assert "additionalProperties" not in node, path


def test_every_spec_field_is_described() -> None:
    spec = _schema()["properties"]["spec"]
    for path, node in _walk(spec):
        if path and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"spec{path} has no description"


def test_api_lint_no_phase_and_status_subresource() -> None:
    crd = inference_service_crd()
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert "phase" not in _schema()["properties"]["status"]["properties"]
    conditions = _schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_defaults_and_enums_in_schema() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    assert spec["kvTransfer"]["properties"]["connector"]["default"] == "lmcache"
    assert spec["kvTransfer"]["properties"]["connector"]["enum"] == ["lmcache", "nixl"]
    assert spec["prefill"]["default"]["parallelism"] == {"tensor": 1, "pipeline": 1}
    assert spec["decode"]["properties"]["autoscaling"]["default"]["minReplicas"] == 1
    assert spec["prefill"]["properties"]["parallelism"]["properties"]["tensor"]["minimum"] == 1
    assert spec["router"]["properties"]["policy"]["enum"] == [
        "least-loaded",
        "round-robin",
        "prefix-aware",
    ]
    ratio = spec["autoscaling"]["properties"]["prefillToDecodeRatio"]["properties"]["min"]
    assert ratio["exclusiveMinimum"] is True and ratio["minimum"] == 0


def _node(scope: str) -> dict[str, Any]:
    node = _schema()
    for seg in filter(None, scope.split(".")):
        node = node["properties"][seg.removesuffix("[]")]
        node = node["items"] if seg.endswith("[]") else node
    return node


def test_cel_rules_come_from_the_table() -> None:
    """Every rule of the table sits at each of its scopes, with its one message, and nothing
    else carries CEL."""
    expected = []
    for rule in RULES:
        for scope in rule.scopes:
            item = {"rule": rule.cel, "message": rule.message}
            if scope:
                item["fieldPath"] = rule.field
            assert item in _node(scope).get("x-kubernetes-validations", []), (rule.name, scope)
            expected.append(item)
    found = [r for _, n in _walk(_schema()) for r in n.get("x-kubernetes-validations", [])]
    assert sorted(map(str, found)) == sorted(map(str, expected))
    text = "\n".join(r["rule"] for r in found)
    for needle in (
        "self.minReplicas <= self.maxReplicas",
        "self.min <= self.max",
        "!has(self.lmcache) || self.connector == 'lmcache'",
        "self.decode.parallelism.pipeline == 1",
        "self.metadata.name.size() <= 40",
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    ):
        assert needle in text, needle


def test_cel_inputs_are_bounded() -> None:
    """The API server estimates each rule's cost from maxItems/maxLength; unbounded lists or
    strings under a rule make it refuse the CRD."""
    for where in ("engine", "prefill", "decode"):
        node = _schema()["properties"]["spec"]["properties"][where]["properties"]
        assert node["args"]["maxItems"] and node["args"]["items"]["maxLength"]
        assert node["env"]["maxItems"] and node["env"]["items"]["properties"]["name"]["maxLength"]


def test_decode_alone_defaults_kv_usage_target() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    usage = "targetKVCacheUsagePercent"
    decode = spec["decode"]["properties"]["autoscaling"]["properties"][usage]
    prefill = spec["prefill"]["properties"]["autoscaling"]["properties"][usage]
    assert decode["default"] == 80 and "default" not in prefill
    assert decode["maximum"] == prefill["maximum"] == 100
    scrape = spec["autoscaling"]["properties"]["source"]["properties"]["scrape"]
    assert "default" not in scrape["properties"]["port"]


def test_printer_columns_and_names() -> None:
    crd = inference_service_crd()
    cols = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert cols == ["Ready", "Prefill", "Decode", "TPxPP", "KV", "Endpoint", "Age"]
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["tisvc"]  # "isvc" is KServe's
    assert "tandem" in names["categories"]
