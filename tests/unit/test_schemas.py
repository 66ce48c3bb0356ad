"""The JSON Schemas shipped in the package (docs/formats.md) hold for real `report`/`diff --json` outputs.

A real run's report.json/metadata.json and `build --json` are validated in tests/e2e/test_run_e2e.py.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FORMATS_DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"
SCHEMAS = ("build", "report", "diff", "run-report", "metadata")


def schema(name: str) -> dict[str, Any]:
    """A schema as the installed package ships it (package data, not the checkout's path)."""
    text = (resources.files("pagelab") / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate(name: str, doc: Any) -> None:
    jsonschema.validate(doc, schema(name), cls=jsonschema.Draft202012Validator)


def pagelab_json(*args: str) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "pagelab", *args, "--json", "-"], capture_output=True, text=True, check=False
    )
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", SCHEMAS)
def test_each_shipped_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema(name))


@pytest.mark.parametrize("fixture", ["report_po61.txt.xz", "report_po612.txt.xz", "report_ss612.txt.xz"])
def test_report_json_of_dumps_and_show_stacks_matches_the_report_schema(fixture: str) -> None:
    doc = pagelab_json("report", str(FIXTURES / fixture))
    validate("report", doc)
    assert doc["stacks"], "an empty report would validate vacuously"


def test_report_json_grouped_and_filtered_matches_the_report_schema() -> None:
    doc = pagelab_json("report", str(FIXTURES / "report_po612.txt.xz"), "--by", "comm", "--top", "3")
    validate("report", doc)


@pytest.mark.parametrize(
    ("before", "after"),
    [("report_po61.txt.xz", "report_po612.txt.xz"), ("report_po612.txt.xz", "report_ss612.txt.xz")],
)
def test_diff_json_matches_the_diff_schema(before: str, after: str) -> None:
    doc = pagelab_json("diff", str(FIXTURES / before), str(FIXTURES / after))
    validate("diff", doc)
    assert doc["suspects"] and doc["shrunk"], "lists without items would validate vacuously"


def test_the_schemas_reject_a_report_without_a_contract_field_and_accept_an_added_one() -> None:
    doc = pagelab_json("report", str(FIXTURES / "report_ss612.txt.xz"))
    added = copy.deepcopy(doc)
    added["some_future_field"] = {"anything": [1, 2]}
    added["stacks"][0]["another"] = True
    validate("report", added)
    for field in ("stacks", "total_pages"):
        broken = copy.deepcopy(doc)
        del broken[field]
        with pytest.raises(jsonschema.ValidationError, match=field):
            validate("report", broken)
    broken = copy.deepcopy(doc)
    broken["stacks"][0]["frames"] = "not a list"
    with pytest.raises(jsonschema.ValidationError):
        validate("report", broken)


def _required(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        found.update(node.get("required", []))
        for value in node.values():
            found |= _required(value)
    elif isinstance(node, list):
        for value in node:
            found |= _required(value)
    return found


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_field_a_schema_requires_is_documented_in_formats_md(name: str) -> None:
    text = FORMATS_DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z_0-9]+)`", text))  # `field`
    for braces in re.findall(r"`\[?\{([^`]*)\}\]?`", text):  # `{field, field: [{field}]}`, `[{field}]`
        documented.update(re.findall(r"[a-z_0-9]+", braces))
    missing = sorted(_required(schema(name)) - documented)
    assert not missing, f"{name}.schema.json requires fields docs/formats.md does not describe: {missing}"
