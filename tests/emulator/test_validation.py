"""CRD schema validation: the pure function and its 422 over HTTP."""

from __future__ import annotations

import copy

import pytest

from tests.kubeapi.cel import CELUnsupported
from tests.kubeapi.validation import validate_custom_resource

from .conftest import WIDGETS, example, widget, widget_crd


def errs(obj, old=None):
    return validate_custom_resource(widget_crd(), obj, old)[1]


def one(obj, old=None) -> str:
    e = errs(obj, old)
    assert len(e) == 1, e
    return e[0]


def test_valid_object_is_pruned_and_defaulted():
    obj = widget(extra={"anything": {"goes": [1]}}, bogus=1)
    obj["topLevelJunk"] = True
    out, e = validate_custom_resource(widget_crd(), obj)
    assert e == []
    assert "bogus" not in out["spec"] and "topLevelJunk" not in out
    assert out["spec"]["extra"] == {"anything": {"goes": [1]}}  # preserve-unknown-fields
    assert out["spec"]["items"][0]["weight"] == 1
    assert out["spec"]["nested"] == {"mode": "auto"}  # default {} then its own defaults
    assert out["metadata"] == {"name": "w1"}
    o2, _ = validate_custom_resource(
        widget_crd(), widget(color=None, items=[{"name": "a", "version": "1"}, {"name": "b", "alias": "x"}])
    )
    assert o2["spec"]["color"] == "red"  # null of a non-nullable field is dropped, then defaulted
    assert [i["weight"] for i in o2["spec"]["items"]] == [0, 0]


def test_input_is_not_mutated():
    obj = widget()
    before = copy.deepcopy(obj)
    validate_custom_resource(widget_crd(), obj)
    assert obj == before


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"size": 11}, "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"),
        ({"size": 0}, "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"),
        (
            {"size": "3"},
            'spec.size: Invalid value: "string": spec.size in body must be of type integer: "string"',
        ),
        (
            {"color": "pink"},
            'spec.color: Unsupported value: "pink": supported values: "red", "green", "blue"',
        ),
        ({"code": "abcdefghij"}, "spec.code: Too long: may not be more than 8 bytes"),
        ({"code": "a"}, 'spec.code: Invalid value: "a": spec.code in body should be at least 2 chars long'),
        ({"code": "ab1"}, "spec.code: Invalid value: \"ab1\": spec.code in body should match '^[a-z]+$'"),
        (
            {"code": "ab\n"},
            "spec.code: Invalid value: \"ab\\n\": spec.code in body should match '^[a-z]+$'",
        ),  # RE2 `$`
        ({"ratio": 1}, "spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1"),
        ({"tags": ["a", "b", "c", "d"]}, "spec.tags: Too many: 4: must have at most 3 items"),
        ({"tags": ["a", "a"]}, 'spec.tags[1]: Duplicate value: "a"'),
        ({"items": []}, "spec.items: Invalid value: 0: spec.items in body should have at least 1 items"),
        (
            {"when": "yesterday"},
            'spec.when: Invalid value: "yesterday": spec.when in body must be of type date-time: "yesterday"',
        ),
        (
            {"port": True},
            'spec.port: Invalid value: "boolean": spec.port in body must be of type integer or string: '
            '"boolean"',
        ),
        ({"labels": {"ok": "toolong"}}, "spec.labels.ok: Too long: may not be more than 5 bytes"),
    ],
)
def test_openapi_errors_name_the_field(spec, expected):
    e = errs(widget(**spec))
    assert e[0] == expected, e


def test_required_and_int_or_string():
    obj = widget()
    del obj["spec"]["size"]
    assert one(obj) == "spec.size: Required value"
    obj = widget()
    del obj["spec"]
    assert one(obj) == "spec: Required value"
    assert errs(widget(port=8080)) == [] and errs(widget(port="http")) == []


def test_list_map_keys_must_be_unique():
    e = errs(
        widget(items=[{"name": "a", "weight": 1, "version": "1"}, {"name": "a", "weight": 2, "version": "2"}])
    )
    assert e == ['spec.items[1]: Duplicate value: map[string]interface {}{"name":"a"}']


def test_cel_rules_with_messages_reasons_and_field_paths():
    assert (
        one(widget(items=[{"name": "a", "weight": 0, "version": "1"}]))
        == 'spec.items: Invalid value: "array": at least one item needs a weight above 0'
    )
    # reason FieldValueForbidden renders as Forbidden
    assert (
        one(widget(items=[{"name": "a", "weight": 1, "version": "1", "alias": "x"}]))
        == "spec.items[0]: Forbidden: set exactly one of version or alias"
    )
    # fieldPath redirects the error
    assert (
        one(widget(size=2, minSize=3)) == 'spec.size: Invalid value: "object": size must be at least minSize'
    )
    # map keys with matches()
    assert (
        one(widget(labels={"Bad": "x"}))
        == 'spec.labels: Invalid value: "object": label keys must be lowercase '
        "letters"
    )


def test_cel_skipped_when_there_are_type_errors():
    e = errs(widget(size="x", items=[{"name": "a", "weight": 0, "version": "1"}]))
    assert e[0].startswith("spec.size: Invalid value")
    assert not any("weight above 0" in m for m in e)
    assert "some validation rules were not checked" in e[-1]


def test_transition_rules_only_on_update_and_when_old_value_exists():
    new = widget(code="abc")
    assert errs(new) == []  # create: oldSelf rules do not run
    old = widget()  # no spec.name before: the rule does not run either
    assert errs(new, old=old) == []
    assert errs(new, old=widget(code="abc")) == []
    assert one(new, old=widget(code="xyz")) == 'spec.code: Invalid value: "string": is immutable'


def test_transition_rules_correlate_list_map_items_by_key():
    old = widget(
        items=[
            {"name": "a", "weight": 1, "version": "1", "pinned": "p1"},
            {"name": "b", "weight": 1, "version": "1", "pinned": "p2"},
        ]
    )
    reordered = widget(
        items=[
            {"name": "b", "weight": 1, "version": "1", "pinned": "p2"},
            {"name": "a", "weight": 5, "version": "1", "pinned": "p1"},
        ]
    )
    assert errs(reordered, old=old) == []
    changed = widget(
        items=[
            {"name": "a", "weight": 1, "version": "1", "pinned": "CHANGED"},
            {"name": "c", "weight": 1, "version": "1", "pinned": "new"},
        ]
    )
    assert errs(changed, old=old) == ['spec.items[0].pinned: Invalid value: "string": pinned is immutable']


def test_cel_runtime_error_is_reported_not_passed():
    crd = widget_crd()
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["x-kubernetes-validations"] = [{"rule": "self.minSize > 0"}]
    _, e = validate_custom_resource(crd, widget())
    assert (
        len(e) == 1
        and e[0].startswith('spec: Invalid value: "object": no such')
        and "self.minSize > 0" in e[0]
    )


def test_unsupported_cel_function_is_loud():
    crd = widget_crd()
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["x-kubernetes-validations"] = [{"rule": "self.color.someK8sOnlyFunction()"}]
    with pytest.raises(CELUnsupported, match="someK8sOnlyFunction"):
        validate_custom_resource(crd, widget())


def test_number_fields_are_doubles_in_cel():
    crd = widget_crd()
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["x-kubernetes-validations"] = [
        {"rule": "!has(self.ratio) || self.ratio < 0.5", "message": "ratio too big"}
    ]
    assert validate_custom_resource(crd, widget(ratio=0))[1] == []  # JSON 0 is a double here, no type error
    assert validate_custom_resource(crd, widget(ratio=0.7))[1] == [
        'spec: Invalid value: "object": ratio too big'
    ]


def test_project_crds_accept_examples_and_reject_bad_specs(emu):
    reg = emu.emulator.registry
    for kind, plural in (
        ("Dataset", "datasets"),
        ("TrainingRun", "trainingruns"),
        ("ModelDeployment", "modeldeployments"),
    ):
        crd = reg.get("dockyard.dev", "v1alpha1", plural).crd
        obj = example(kind)
        _, e = validate_custom_resource(crd, obj)
        assert e == [], (kind, e)
    md_crd = reg.get("dockyard.dev", "v1alpha1", "modeldeployments").crd
    md = example("ModelDeployment")
    md["spec"]["variants"][1]["name"] = md["spec"]["variants"][0]["name"]
    _, e = validate_custom_resource(md_crd, md)
    assert any(x.startswith("spec.variants[1]: Duplicate value") for x in e), e


def test_http_422_status_names_the_field(k):
    r = k.post(WIDGETS, widget(size=42))
    assert r.status_code == 422
    st = r.json()
    assert st["kind"] == "Status" and st["reason"] == "Invalid" and st["code"] == 422
    assert st["message"] == (
        'Widget.test.dockyard.dev "w1" is invalid: spec.size: Invalid value: 42: spec.size in '
        "body should be less than or equal to 10"
    )
    assert st["details"]["name"] == "w1" and st["details"]["kind"] == "Widget"
    assert st["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "field": "spec.size",
            "message": "Invalid value: 42: spec.size in body should be less than or equal to 10",
        }
    ]


def test_http_422_multiple_errors_and_cel(k):
    r = k.post(WIDGETS, widget(color="pink", items=[{"name": "a", "weight": 0, "version": "1"}]))
    assert r.status_code == 422
    msg = r.json()["message"]
    assert msg.startswith('Widget.test.dockyard.dev "w1" is invalid: [spec.color: Unsupported value: "pink"')
    assert 'spec.items: Invalid value: "array": at least one item needs a weight above 0' in msg
    fields = [c["field"] for c in r.json()["details"]["causes"]]
    assert fields == ["spec.color", "spec.items"]


def test_http_transition_rule_on_update(k):
    assert k.post(WIDGETS, widget(code="abc")).status_code == 201
    r = k.patch(f"{WIDGETS}/w1", {"spec": {"code": "xyz"}})
    assert r.status_code == 422
    assert r.json()["details"]["causes"][0]["field"] == "spec.code"
    assert "is immutable" in r.json()["message"]
    assert k.patch(f"{WIDGETS}/w1", {"spec": {"size": 4}}).status_code == 200


def test_unknown_fields_strict_warn_ignore(k):
    body = widget(bogus=1)
    r = k.post(WIDGETS, body, params={"fieldValidation": "Strict"})
    assert r.status_code == 400
    assert 'strict decoding error: unknown field "spec.bogus"' in r.json()["message"]
    r = k.post(WIDGETS, body)  # default Warn: created, pruned, with a Warning header
    assert r.status_code == 201
    assert "bogus" not in r.json()["spec"]
    assert 'unknown field \\"spec.bogus\\"' in r.headers["Warning"]


def test_metadata_name_is_validated(k):
    r = k.post(WIDGETS, widget(name="Bad_Name"))
    assert r.status_code == 422
    assert r.json()["details"]["causes"][0]["field"] == "metadata.name"
    r = k.post(
        "/api/v1/namespaces/default/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "1abc"},
            "spec": {"ports": [{"port": 80}]},
        },
    )
    assert r.status_code == 422 and "DNS-1035" in r.json()["message"]
    r = k.post(
        "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"version": "a/b"}}},
    )
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "metadata.labels"
