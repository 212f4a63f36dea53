"""The compatibility rules of published events' schemas (orchestrator.runtime.compatibility):
each refused change names its field; compatible changes pass; `$ref`s, nested objects,
alternatives, arrays and maps are followed; and the registry's rules (`assess`)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field, TypeAdapter

from orchestrator.runtime.compatibility import (
    Change,
    Declaration,
    Severity,
    Status,
    assess,
    breaking,
    changes,
    fields,
    same,
    type_text,
)


def obj(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


STR = {"type": "string"}
INT = {"type": "integer"}
NULLABLE_STR = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}


def messages(found: list[Change]) -> list[str]:
    return [str(c) for c in found]


def schema_of(model: Any) -> dict[str, Any]:
    return dict(TypeAdapter(model).json_schema())


# -- unchanged, annotations ----------------------------------------------------------------


def test_an_identical_schema_has_no_change() -> None:
    schema = obj(("id",), id=STR, note=NULLABLE_STR)
    assert changes(schema, schema) == []
    assert same(schema, schema)


def test_titles_and_descriptions_are_annotations_only() -> None:
    old = {**obj(("id",), id={**STR, "title": "Id"}), "title": "A"}
    new = {
        **obj(("id",), id={**STR, "title": "Identifier", "description": "the id"}),
        "title": "B",
        "description": "wider",
    }
    found = changes(old, new)
    assert found
    assert {c.severity for c in found} == {Severity.ANNOTATION}
    assert breaking(old, new) == []
    assert same(old, new)


def test_a_renamed_model_is_no_change_but_its_title() -> None:
    class Address(BaseModel):
        city: str

    class Place(BaseModel):
        city: str

    class Old(BaseModel):
        address: Address

    class New(BaseModel):
        address: Place

    old, new = schema_of(Old), schema_of(New)
    assert breaking(old, new) == []
    assert same(old, new)


# -- refused: each names the field ------------------------------------------------------


def test_a_removed_field_is_refused_by_name() -> None:
    old = obj(("id",), id=STR, weight=INT)
    new = obj(("id",), id=STR)
    assert messages(breaking(old, new)) == ["field 'weight' removed"]
    (change,) = breaking(old, new)
    assert (change.path, change.kind) == ("weight", "removed")


def test_a_removed_optional_field_is_refused_too() -> None:
    old = obj(("id",), id=STR, note=NULLABLE_STR)
    assert messages(breaking(old, obj(("id",), id=STR))) == ["field 'note' removed"]


def test_a_changed_type_is_refused_by_name() -> None:
    old = obj(("id",), id=STR)
    new = obj(("id",), id=INT)
    assert messages(breaking(old, new)) == ["field 'id' changed type from string to integer"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (STR, NULLABLE_STR),  # null allowed now: a reader of the field gets None
        (NULLABLE_STR, STR),  # null refused now: old data may hold it
        (INT, {"type": "number"}),
        (STR, {"type": "string", "format": "date-time"}),
        ({"type": "array", "items": STR}, STR),
        (STR, {}),
    ],
)
def test_any_change_of_a_fields_json_types_is_a_type_change(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    found = breaking(obj(("x",), x=before), obj(("x",), x=after))
    assert [c.kind for c in found] == ["type"]
    assert found[0].message.startswith("field 'x' changed type from ")


def test_a_required_field_added_is_refused_by_name() -> None:
    old = obj(("id",), id=STR)
    new = obj(("id", "carrier"), id=STR, carrier=STR)
    assert messages(breaking(old, new)) == ["required field 'carrier' added"]


def test_an_optional_field_made_required_is_refused() -> None:
    old = obj(("id",), id=STR, carrier=STR)
    new = obj(("id", "carrier"), id=STR, carrier=STR)
    assert messages(breaking(old, new)) == ["field 'carrier' became required"]


def test_every_fault_is_listed() -> None:
    old = obj(("id",), id=STR, weight=INT, kind=STR)
    new = obj(("id", "carrier"), id=INT, kind=STR, carrier=STR)
    assert messages(breaking(old, new)) == [
        "required field 'carrier' added",
        "field 'id' changed type from string to integer",
        "field 'weight' removed",
    ]


def test_a_root_type_change_names_the_payload() -> None:
    assert messages(breaking(obj(), {"type": "array", "items": STR})) == [
        "the payload changed type from object to array"
    ]


# -- compatible -----------------------------------------------------------------------------


def test_a_new_optional_field_is_compatible() -> None:
    old = obj(("id",), id=STR)
    new = obj(("id",), id=STR, carrier=NULLABLE_STR)
    assert breaking(old, new) == []
    found = changes(old, new)
    assert messages(found) == ["optional field 'carrier' added"]
    assert found[0].severity is Severity.COMPATIBLE
    assert not same(old, new)  # a change all the same: it takes a new version


def test_a_field_no_longer_required_and_a_new_default_are_compatible() -> None:
    old = obj(("id", "tag"), id=STR, tag=STR)
    new = obj(("id",), id=STR, tag={**STR, "default": "none"})
    assert breaking(old, new) == []
    assert messages(changes(old, new)) == [
        "field 'tag' now has default \"none\"",
        "field 'tag' is no longer required",
    ]


def test_enum_values_added_are_compatible_dropped_are_refused() -> None:
    old = obj(("kind",), kind={"type": "string", "enum": ["a", "b"]})
    wider = obj(("kind",), kind={"type": "string", "enum": ["a", "b", "c"]})
    narrower = obj(("kind",), kind={"type": "string", "enum": ["a"]})
    assert breaking(old, wider) == []
    assert messages(changes(old, wider)) == ["field 'kind' now also allows \"c\""]
    assert messages(breaking(old, narrower)) == ["field 'kind' no longer allows \"b\""]
    assert messages(breaking(old, obj(("kind",), kind={"type": "string", "const": "a"}))) == [
        "field 'kind' no longer allows \"b\""
    ]


def test_constraints_tightened_are_refused_loosened_are_compatible() -> None:
    def qty(**extra: Any) -> dict[str, Any]:
        return obj(("qty",), qty={"type": "integer", **extra})

    assert messages(breaking(qty(minimum=1), qty(minimum=2))) == [
        "field 'qty' minimum changed from 1 to 2"
    ]
    assert messages(breaking(qty(), qty(maximum=9))) == ["field 'qty' now has maximum 9"]
    assert breaking(qty(minimum=2), qty(minimum=1)) == []
    assert breaking(qty(maximum=5), qty(maximum=9)) == []
    assert breaking(qty(minimum=1), qty()) == []
    text = {"type": "string"}
    assert messages(
        breaking(obj(("s",), s=text), obj(("s",), s={**text, "pattern": "^[A-Z]+$"}))
    ) == ["field 's' now has pattern \"^[A-Z]+$\""]


def test_fewer_other_fields_allowed_is_refused() -> None:
    old = obj(("id",), id=STR)
    closed = {**old, "additionalProperties": False}
    assert messages(breaking(old, closed)) == ["the payload allows fewer fields"]
    assert breaking(closed, old) == []


def test_an_unknown_keyword_changed_is_refused() -> None:
    old = obj(("tags",), tags={"type": "array", "items": STR, "uniqueItems": True})
    new = obj(("tags",), tags={"type": "array", "items": STR, "contains": STR})
    assert messages(breaking(old, new)) == ["field 'tags': keyword 'contains' changed"]
    # uniqueItems dropped: looser
    assert [c.severity for c in changes(old, new) if c.kind == "constraint"] == [
        Severity.COMPATIBLE
    ]


# -- followed: nested objects, $ref, alternatives, arrays, maps --------------------------------


class Address(BaseModel):
    city: str
    postcode: str | None = None


class Item(BaseModel):
    sku: str
    quantity: int = Field(1, ge=1)


class Before(BaseModel):
    id: str
    address: Address
    billing: Address | None = None
    items: list[Item] = []
    tags: dict[str, int] = {}


def test_a_nested_object_behind_a_ref_is_followed() -> None:
    class Address2(BaseModel):
        city: int
        postcode: str | None = None
        street: str

    class After(BaseModel):
        id: str
        address: Address2
        billing: Address | None = None
        items: list[Item] = []
        tags: dict[str, int] = {}

    assert messages(breaking(schema_of(Before), schema_of(After))) == [
        "field 'address.city' changed type from string to integer",
        "required field 'address.street' added",
    ]


def test_an_alternative_behind_a_ref_is_followed() -> None:
    class Billing(BaseModel):
        city: str

    class After(BaseModel):
        id: str
        address: Address
        billing: Billing | None = None
        items: list[Item] = []
        tags: dict[str, int] = {}

    assert messages(breaking(schema_of(Before), schema_of(After))) == [
        "field 'billing.postcode' removed"
    ]


def test_array_items_are_compared() -> None:
    class Item2(BaseModel):
        sku: int
        quantity: int = Field(1, ge=1)
        colour: str | None = None

    class After(BaseModel):
        id: str
        address: Address
        billing: Address | None = None
        items: list[Item2] = []
        tags: dict[str, int] = {}

    old, new = schema_of(Before), schema_of(After)
    assert messages(breaking(old, new)) == [
        "field 'items[].sku' changed type from string to integer"
    ]
    assert "optional field 'items[].colour' added" in messages(changes(old, new))
    plain_old = obj(("names",), names={"type": "array", "items": STR})
    plain_new = obj(("names",), names={"type": "array", "items": INT})
    assert messages(breaking(plain_old, plain_new)) == [
        "field 'names[]' changed type from string to integer"
    ]


def test_map_values_are_compared() -> None:
    class After(BaseModel):
        id: str
        address: Address
        billing: Address | None = None
        items: list[Item] = []
        tags: dict[str, str] = {}

    assert messages(breaking(schema_of(Before), schema_of(After))) == [
        "field 'tags.*' changed type from integer to string"
    ]


def test_tuple_items_are_compared_by_position() -> None:
    old = obj(("pair",), pair={"type": "array", "prefixItems": [INT, STR]})
    new = obj(("pair",), pair={"type": "array", "prefixItems": [INT, INT]})
    assert messages(breaking(old, new)) == ["field 'pair[1]' changed type from string to integer"]


def test_a_type_list_equals_its_anyof() -> None:
    old = obj(("x",), x={"type": ["string", "null"]})
    new = obj(("x",), x={"anyOf": [STR, {"type": "null"}]})
    assert breaking(old, new) == []
    assert breaking(new, old) == []


def test_a_recursive_model_is_compared_once() -> None:
    class Node(BaseModel):
        name: str
        children: list[Node] = []

    class Node2(BaseModel):
        name: str
        children: list[Node2] = []
        size: int

    class Old(BaseModel):
        tree: Node | None = None

    class New(BaseModel):
        tree: Node2 | None = None

    assert messages(breaking(schema_of(Old), schema_of(New))) == [
        "required field 'tree.size' added"
    ]
    assert breaking(schema_of(Old), schema_of(Old)) == []


def test_an_unresolvable_ref_is_compared_as_written() -> None:
    old = obj(("a",), a={"$ref": "https://example.com/a.json"})
    new = obj(("a",), a={"$ref": "https://example.com/b.json"})
    assert messages(breaking(old, new)) == ["field 'a': keyword '$ref' changed"]
    assert breaking(old, old) == []


# -- fields, for people ----------------------------------------------------------------------


def test_fields_flatten_nested_objects_arrays_and_maps() -> None:
    found = {f.path: (f.type, f.required) for f in fields(schema_of(Before))}
    assert found == {
        "id": ("string", True),
        "address": ("object (Address)", True),
        "address.city": ("string", True),
        "address.postcode": ("string or null", False),
        "billing": ("object (Address) or null", False),
        "billing.city": ("string", True),
        "billing.postcode": ("string or null", False),
        "items": ("array of object (Item)", False),
        "items[].quantity": ("integer", False),
        "items[].sku": ("string", True),
        "tags": ("map of integer", False),
    }


def test_fields_of_a_recursive_model_end() -> None:
    class Node(BaseModel):
        name: str
        children: list[Node] = []

    paths = [f.path for f in fields(schema_of(Node))]
    assert paths == ["children", "name"]


def test_type_text_of_enums() -> None:
    schema = {"type": "string", "enum": ["a", "b"]}
    assert type_text(schema, schema) == '"a" | "b"'


# -- the registry's rules ---------------------------------------------------------------------

V1 = obj(("id",), id=STR)
V2 = obj(("id",), id=STR, carrier=NULLABLE_STR)  # compatible with V1
BROKEN = obj(("id",), id=INT)  # not compatible with V1


def declared(
    version: int,
    schema: dict[str, Any],
    workflow: str = "parcel",
    workflow_version: int = 1,
    latest: bool = True,
    kind: str = "parcel.shipped",
) -> Declaration:
    return Declaration(kind, version, workflow, workflow_version, latest, schema)


def test_a_type_never_recorded_is_new_and_to_record() -> None:
    (report,) = assess([declared(1, V1)], {})
    assert report.status is Status.NEW
    assert report.faults == []
    assert report.to_record == {1: V1}


def test_new_declared_versions_are_checked_one_against_the_other() -> None:
    found = [declared(1, V1, workflow_version=1, latest=False), declared(2, V2, workflow_version=2)]
    (report,) = assess(found, {})
    assert (report.status, report.faults, sorted(report.to_record)) == (Status.NEW, [], [1, 2])
    found = [
        declared(1, V1, workflow_version=1, latest=False),
        declared(2, BROKEN, workflow_version=2),
    ]
    (report,) = assess(found, {})
    assert report.faults == [
        "parcel.shipped v2 is not backward compatible with v1: "
        "field 'id' changed type from string to integer"
    ]


def test_a_recorded_version_unchanged_passes() -> None:
    (report,) = assess([declared(1, V1)], {"parcel.shipped": {1: V1}})
    assert (report.status, report.faults, report.to_record) == (Status.RECORDED, [], {})


def test_a_recorded_version_changed_without_a_new_version_is_refused() -> None:
    (report,) = assess([declared(1, V2)], {"parcel.shipped": {1: V1}})
    assert report.status is Status.CHANGED
    assert report.faults == [
        "parcel.shipped v1 changed without a new version: optional field 'carrier' added"
    ]


def test_only_annotations_differing_from_the_record_is_a_note() -> None:
    described = {**V1, "description": "now described"}
    (report,) = assess([declared(1, described)], {"parcel.shipped": {1: V1}})
    assert (report.status, report.faults) == (Status.RECORDED, [])
    assert report.notes and "titles or descriptions" in report.notes[0]


def test_a_new_version_compatible_with_the_last_recorded_is_to_record() -> None:
    (report,) = assess([declared(2, V2)], {"parcel.shipped": {1: V1}})
    assert (report.status, report.faults, report.to_record) == (Status.NEW_VERSION, [], {2: V2})


def test_a_new_version_is_compared_with_the_last_recorded_one() -> None:
    recorded = {"parcel.shipped": {1: BROKEN, 2: V1}}
    (report,) = assess([declared(3, V2)], recorded)
    assert report.faults == []
    (report,) = assess([declared(3, BROKEN)], recorded)
    assert report.status is Status.INCOMPATIBLE
    assert report.faults == [
        "parcel.shipped v3 is not backward compatible with v2: "
        "field 'id' changed type from string to integer"
    ]


def test_a_version_between_recorded_ones_is_refused() -> None:
    (report,) = assess([declared(2, V1)], {"parcel.shipped": {1: V1, 3: V1}})
    assert report.status is Status.INCOMPATIBLE
    assert report.faults == [
        "parcel.shipped v2 is declared but not recorded, while a later version (v3) is: "
        "versions are recorded in order"
    ]


def test_workflows_declaring_one_version_differently_are_refused() -> None:
    found = [declared(1, V1, "parcel"), declared(1, V2, "billing")]
    (report,) = assess(found, {})
    assert report.status is Status.CONFLICT
    assert report.faults == [
        "parcel.shipped v1 is declared differently by workflow billing v1 and workflow "
        "parcel v1: field 'carrier' removed"
    ]


def test_workflows_declaring_different_versions_are_refused() -> None:
    found = [declared(1, V1, "parcel"), declared(2, V2, "billing")]
    (report,) = assess(found, {})
    assert report.status is Status.CONFLICT
    assert report.faults == [
        "parcel.shipped is declared at different versions by the workflows publishing it: "
        "billing (v2), parcel (v1); they must declare the same version and schema"
    ]


def test_an_older_workflow_version_may_declare_an_older_schema_version() -> None:
    found = [
        declared(1, V1, "parcel", 1, latest=False),
        declared(2, V2, "parcel", 2),
        declared(2, V2, "billing", 1),
    ]
    (report,) = assess(found, {"parcel.shipped": {1: V1}})
    assert (report.status, report.faults, sorted(report.to_record)) == (
        Status.NEW_VERSION,
        [],
        [2],
    )
    assert report.declared == 2
    assert report.workflows == ["billing", "parcel"]


def test_reports_come_sorted_by_type() -> None:
    found = [declared(1, V1, kind="b.two"), declared(1, V1, kind="a.one")]
    assert [r.type for r in assess(found, {})] == ["a.one", "b.two"]
