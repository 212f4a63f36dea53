"""End to end: `orchestrator schemas list|show|check`, each a `python -m cli.main` process
over tests/published_workflows.py (parcel v1 and v2, parcel_billing) and a registry folder
in a temporary directory. No Redis: the commands read definitions and files only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli_env, run_cli

Env = dict[str, str]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return cli_env(None, tmp_path, ORCHESTRATOR_WORKFLOWS="tests.published_workflows")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "schemas"


def schemas(*args: str, env: Env, folder: Path, code: int = 0) -> str:
    """Run `orchestrator schemas ...` on `folder`; it must exit `code`; its stdout."""
    result = run_cli("schemas", *args, "--dir", str(folder), env=env)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, f"{args} exited {result.returncode}: {result.stderr}"
    return result.stdout


def schemas_json(*args: str, env: Env, folder: Path, code: int = 0) -> Any:
    return json.loads(schemas(*args, "--json", env=env, folder=folder, code=code))


def current(event_type: str, env: Env, folder: Path) -> dict[str, Any]:
    shown = schemas_json("show", event_type, env=env, folder=folder)
    schema = shown["schema"]
    assert isinstance(schema, dict)
    return schema


def record(folder: Path, event_type: str, version: int, schema: dict[str, Any]) -> Path:
    path = folder / event_type / f"v{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    return path


def refused(output: str) -> list[str]:
    return [line.removeprefix("refused: ") for line in output.splitlines() if "refused:" in line]


# -- list and show ------------------------------------------------------------------------


def test_list_shows_every_published_type(env: Env, folder: Path) -> None:
    out = schemas("list", env=env, folder=folder)
    lines = out.splitlines()
    assert lines[0].split() == ["TYPE", "WORKFLOWS", "DECLARED", "RECORDED", "STATUS"]
    assert lines[1].split() == ["parcel.returned", "parcel", "v2", "-", "new"]
    assert lines[2].split() == [
        "parcel.shipped",
        "parcel,",
        "parcel_billing",
        "v1,",
        "v2",
        "-",
        "new",
    ]

    rows = {row["type"]: row for row in schemas_json("list", env=env, folder=folder)}
    assert set(rows) == {"parcel.shipped", "parcel.returned"}
    shipped = rows["parcel.shipped"]
    assert shipped["workflows"] == ["parcel", "parcel_billing"]
    assert (shipped["declared"], shipped["declared_versions"]) == (2, [1, 2])
    assert (shipped["recorded"], shipped["status"]) == ([], "new")
    assert shipped["description"] == "a parcel was shipped"
    assert {"workflow": "parcel", "workflow_version": 1, "version": 1} in shipped["declared_by"]


def test_show_prints_the_fields_and_the_schema(env: Env, folder: Path) -> None:
    out = schemas("show", "parcel.shipped", env=env, folder=folder)
    assert "version      2 (declared by parcel (workflow v2), parcel_billing (workflow v1))" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  ")}
    assert rows["parcel_id"] == ["string", "yes"]
    assert rows["tracking"] == ["string", "or", "null", "no"]
    assert rows["address.city"] == ["string", "yes"]
    assert rows["carrier"] == ["string", "or", "null", "no"]
    assert json.loads(out.split("\nschema\n", 1)[1])["title"] == "ShippedV2"

    shown = schemas_json("show", "parcel.shipped", env=env, folder=folder)
    assert (shown["type"], shown["version"], shown["source"], shown["file"]) == (
        "parcel.shipped",
        2,
        "declared",
        None,
    )
    assert {"name": "carrier", "type": "string or null", "required": False, "description": ""} in (
        shown["fields"]
    )
    assert shown["schema"]["required"] == ["parcel_id", "address"]

    older = schemas_json("show", "parcel.shipped", "--version", "1", env=env, folder=folder)
    assert (older["version"], older["source"]) == (1, "declared")
    assert "carrier" not in {f["name"] for f in older["fields"]}


def test_show_a_recorded_version(env: Env, folder: Path) -> None:
    schemas("check", "--write", env=env, folder=folder)
    shown = schemas_json("show", "parcel.shipped", "--version", "1", env=env, folder=folder)
    assert (shown["source"], shown["file"]) == ("recorded", str(folder / "parcel.shipped/v1.json"))
    assert shown["recorded"] == [1, 2]


def test_show_an_unknown_type_names_the_known_ones(env: Env, folder: Path) -> None:
    result = run_cli("schemas", "show", "parcel.lost", "--dir", str(folder), env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: unknown published event type 'parcel.lost' (known: parcel.returned, parcel.shipped)"
    ]
    result = run_cli(
        "schemas", "show", "parcel.shipped", "--version", "9", "--dir", str(folder), env=env
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: parcel.shipped v9 is neither declared nor recorded")


# -- check ------------------------------------------------------------------------------------


def test_a_new_type_passes_and_write_records_it(env: Env, folder: Path) -> None:
    out = schemas("check", env=env, folder=folder)
    assert "parcel.shipped v2: new, v1, v2 to record" in out
    assert "3 schema version(s) not recorded yet" in out
    assert not folder.exists()  # nothing written without --write

    out = schemas("check", "--write", env=env, folder=folder)
    assert "recorded 3 schema version(s)" in out
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.json"))
    assert files == ["parcel.returned/v2.json", "parcel.shipped/v1.json", "parcel.shipped/v2.json"]
    text = (folder / "parcel.shipped" / "v2.json").read_text()
    schema = json.loads(text)
    assert text == json.dumps(schema, indent=2, sort_keys=True) + "\n"  # pretty, sorted
    assert schema == current("parcel.shipped", env, folder)


def test_check_passes_on_identical_schemas(env: Env, folder: Path) -> None:
    schemas("check", "--write", env=env, folder=folder)
    before = {p: p.read_text() for p in folder.rglob("*.json")}
    out = schemas("check", "--write", env=env, folder=folder)
    assert (
        out.splitlines()[-1] == "2 published event type(s) checked: every one recorded, unchanged"
    )
    assert {p: p.read_text() for p in folder.rglob("*.json")} == before
    rows = schemas_json("list", env=env, folder=folder)
    assert [row["status"] for row in rows] == ["recorded", "recorded"]
    report = schemas_json("check", env=env, folder=folder)
    assert (report["ok"], report["faults"], report["written"]) == (True, [], [])


def test_a_schema_changed_without_a_new_version_is_refused(env: Env, folder: Path) -> None:
    schemas("check", "--write", env=env, folder=folder)
    recorded = json.loads((folder / "parcel.shipped" / "v2.json").read_text())
    del recorded["properties"]["carrier"]  # as if v2 had been recorded before `carrier`
    record(folder, "parcel.shipped", 2, recorded)
    out = schemas("check", env=env, folder=folder, code=1)
    assert refused(out) == [
        "parcel.shipped v2 changed without a new version: optional field 'carrier' added"
    ]
    assert out.splitlines()[-1] == "1 fault(s) in 2 published event type(s)"
    rows = {row["type"]: row for row in schemas_json("list", env=env, folder=folder)}
    assert rows["parcel.shipped"]["status"] == "changed"


def test_a_removed_field_is_refused(env: Env, folder: Path) -> None:
    old = current("parcel.returned", env, folder)
    old["properties"]["weight"] = {"type": "integer"}
    record(folder, "parcel.returned", 1, old)
    out = schemas("check", "--write", env=env, folder=folder, code=1)
    assert refused(out) == [
        "parcel.returned v2 is not backward compatible with v1: field 'weight' removed"
    ]
    assert out.splitlines()[-1].endswith("; nothing recorded")
    assert not (folder / "parcel.returned" / "v2.json").exists()
    assert not (folder / "parcel.shipped").exists()  # nothing at all, when anything is refused


def test_a_changed_type_is_refused(env: Env, folder: Path) -> None:
    old = current("parcel.returned", env, folder)
    old["properties"]["reason"] = {"type": "integer"}
    record(folder, "parcel.returned", 1, old)
    out = schemas("check", env=env, folder=folder, code=1)
    assert refused(out) == [
        "parcel.returned v2 is not backward compatible with v1: "
        "field 'reason' changed type from integer to string"
    ]


def test_a_changed_type_in_an_array_item_behind_a_ref_is_refused(env: Env, folder: Path) -> None:
    old = current("parcel.returned", env, folder)
    old["$defs"]["Item"]["properties"]["sku"] = {"type": "integer"}
    record(folder, "parcel.returned", 1, old)
    out = schemas("check", env=env, folder=folder, code=1)
    assert refused(out) == [
        "parcel.returned v2 is not backward compatible with v1: "
        "field 'items[].sku' changed type from integer to string"
    ]


def test_a_required_field_added_is_refused(env: Env, folder: Path) -> None:
    old = current("parcel.returned", env, folder)
    del old["properties"]["reason"]
    old["required"].remove("reason")
    record(folder, "parcel.returned", 1, old)
    out = schemas("check", env=env, folder=folder, code=1)
    assert refused(out) == [
        "parcel.returned v2 is not backward compatible with v1: required field 'reason' added"
    ]
    rows = {row["type"]: row for row in schemas_json("list", env=env, folder=folder)}
    assert rows["parcel.returned"]["status"] == "incompatible"


def test_every_fault_is_listed_and_json_has_them(env: Env, folder: Path) -> None:
    old = current("parcel.returned", env, folder)
    old["properties"]["weight"] = {"type": "integer"}
    old["properties"]["reason"] = {"type": "integer"}
    record(folder, "parcel.returned", 1, old)
    out = schemas("check", env=env, folder=folder, code=1)
    assert len(refused(out)) == 2
    report = schemas_json("check", env=env, folder=folder, code=1)
    assert report["ok"] is False
    assert [f.rsplit(": ", 1)[1] for f in report["faults"]] == [
        "field 'reason' changed type from integer to string",
        "field 'weight' removed",
    ]
    types = {t["type"]: t for t in report["types"]}
    assert types["parcel.returned"]["faults"] == report["faults"]
    assert types["parcel.shipped"]["faults"] == []


def test_an_optional_field_added_is_accepted_and_recorded(env: Env, folder: Path) -> None:
    old = current("parcel.returned", env, folder)
    del old["properties"]["note"]
    record(folder, "parcel.returned", 1, old)
    out = schemas("check", env=env, folder=folder)
    assert "parcel.returned v2: new version, v2 to record" in out
    out = schemas("check", "--write", env=env, folder=folder)
    assert "parcel.returned v2: new version, recorded v2" in out
    written = json.loads((folder / "parcel.returned" / "v2.json").read_text())
    assert "note" in written["properties"]
    assert json.loads((folder / "parcel.returned" / "v1.json").read_text()) == old  # untouched
    rows = {row["type"]: row for row in schemas_json("list", env=env, folder=folder)}
    assert (rows["parcel.returned"]["recorded"], rows["parcel.returned"]["status"]) == (
        [1, 2],
        "recorded",
    )
    schemas("check", env=env, folder=folder)


def test_the_folder_comes_from_the_environment(env: Env, tmp_path: Path) -> None:
    elsewhere = tmp_path / "registry"
    given = {**env, "ORCHESTRATOR_SCHEMAS_DIR": str(elsewhere)}
    result = run_cli("schemas", "check", "--write", env=given)
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "parcel.shipped" / "v1.json").is_file()


def test_a_recorded_file_that_is_not_json_is_an_error(env: Env, folder: Path) -> None:
    (folder / "parcel.shipped").mkdir(parents=True)
    (folder / "parcel.shipped" / "v1.json").write_text("{not json")
    result = run_cli("schemas", "check", "--dir", str(folder), env=env)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: recorded schema {folder}/parcel.shipped/v1.json is not JSON"
    )
