"""The typed views (:mod:`kinoray.control.views`) against the OpenAPI document and against Mux's own SDKs.

- Every route answering one of the issue's resources (asset, playback id, track, static rendition, upload,
  signing key, webhook endpoint) declares a concrete schema: the ``data`` of its envelope is a component with
  properties, and nothing reachable from it is a free-form object (``{}``, ``additionalProperties: true``).
- Against ``mux-python``'s models (``openapi_types`` and the enums their setters check): every field Mux's model
  declares is a field of the view, or is named in :data:`NOT_OFFERED` with the reason; every enum value the view
  can answer is one Mux's model accepts; the view's type is the SDK's (``str``, ``int``, ``float``, ``bool``, list,
  object).
- Against ``@mux/mux-node``'s TypeScript types: every field Mux's type declares always present (no ``?``) is
  always present in the view (required, or a non-null default).

So a dropped, renamed or mistyped field fails here before it fails a user's SDK.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import pytest
from pydantic import BaseModel

from kinoray.control import views

mux = pytest.importorskip("mux_python")

#: (view, mux-python model, mux-node ``.d.ts`` file under resources/, interface name or None)
PAIRS: list[tuple[type[views.View], Any, str | None, str | None]] = [
    (views.AssetView, mux.Asset, "video/assets.d.ts", "Asset"),
    (views.TrackView, mux.Track, "video/assets.d.ts", "Track"),
    (views.PlaybackIdView, mux.PlaybackID, "shared.d.ts", "PlaybackId"),
    (views.StaticRenditionView, mux.StaticRendition, "video/assets.d.ts", "StaticRendition"),
    (views.StaticRenditionsView, mux.AssetStaticRenditions, None, None),
    (views.MasterView, mux.AssetMaster, None, None),
    (views.AssetProgressView, mux.AssetProgress, "video/assets.d.ts", "AssetProgress"),
    (views.AssetErrorsView, mux.AssetErrors, None, None),
    (views.AssetMetaView, mux.AssetMetadata, None, None),
    (views.UploadView, mux.Upload, "video/uploads.d.ts", "Upload"),
    (views.UploadErrorView, mux.UploadError, None, None),
    (views.NewSigningKeyView, mux.SigningKey, "system/signing-keys.d.ts", "SigningKey"),
    (views.PlaybackIdTargetView, mux.GetAssetOrLiveStreamIdResponseData, None, None),
    (views.LiveStreamView, mux.LiveStream, "video/live-streams.d.ts", "LiveStream"),
    (views.SimulcastTargetView, mux.SimulcastTarget, "video/live-streams.d.ts", "SimulcastTarget"),
    (views.LiveStreamMetaView, mux.LiveStreamMetadata, None, None),
]

#: Fields of Mux's models kinoray does not answer, and why (docs/API.md lists the features).
NOT_OFFERED: dict[tuple[str, str], str] = {
    ("Asset", "per_title_encode"): "deprecated by Mux; accepted on create, no effect",
    ("Asset", "recording_times"): "live recordings are one continuous recording: no gaps to list",
    ("Asset", "non_standard_input_reasons"): "every input is transcoded the same way: no standard/non-standard split",
    ("Track", "max_channel_layout"): "not derived by the pipeline",
    ("PlaybackID", "drm_configuration_id"): "DRM is not offered",
    ("LiveStream", "embedded_subtitles"): "no CEA-608 captions from the ingest yet",
    ("LiveStream", "generated_subtitles"): "no generated subtitles",
    ("LiveStream", "reduced_latency"): "deprecated by Mux: latency_mode says it",
    ("LiveStream", "low_latency"): "deprecated by Mux: latency_mode says it",
    ("LiveStream", "srt_passphrase"): "RTMP ingest only: no SRT",
}

#: Fields mux-node's types say are always present that kinoray leaves out, and why.
NOT_ALWAYS: dict[tuple[str, str], str] = {
    ("Upload", "cors_origin"): "absent for an upload created without one (no browser origin is allowed)",
    ("LiveStream", "stream_key"): "only in the answers to create and reset-stream-key: kinoray keeps its hash only",
}

_SDK_TYPES = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,)}


def _flat(annotation: Any) -> list[Any]:
    """The alternatives of an annotation: ``X | None``, unions and ``Literal`` flattened, ``None`` dropped."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [item for arg in typing.get_args(annotation) for item in _flat(arg)]
    if annotation is type(None):
        return []
    return [annotation]


def _literals(annotation: Any) -> set[str] | None:
    """The values a Literal-typed field can take, or None when it is not an enum."""
    values: set[str] = set()
    for item in _flat(annotation):
        if typing.get_origin(item) is list:
            item = typing.get_args(item)[0]
        if typing.get_origin(item) is not Literal:
            return None
        values.update(typing.get_args(item))
    return values or None


def _mux_enum(model: Any, name: str) -> set[str] | None:
    """The values mux-python's setter of ``name`` accepts, or None when it checks none."""
    source = inspect.getsource(getattr(model, name).fset)
    match = re.search(r"allowed_values = \[(.*?)\]", source)
    return None if match is None else set(re.findall(r'"([^"]*)"', match.group(1)))


def _compatible(annotation: Any, sdk_type: str) -> bool:
    alternatives = _flat(annotation)
    if sdk_type.startswith("list["):
        return all(typing.get_origin(item) is list for item in alternatives)
    if sdk_type in _SDK_TYPES:
        wanted = _SDK_TYPES[sdk_type]
        for item in alternatives:
            if typing.get_origin(item) is Literal:
                if not all(isinstance(value, wanted) for value in typing.get_args(item)):
                    return False
            elif item not in wanted:
                return False
        return True
    if sdk_type in ("PlaybackPolicy", "LiveStreamStatus"):  # enum models of mux-python
        return _literals(annotation) is not None
    return all(isinstance(item, type) and issubclass(item, BaseModel) for item in alternatives)


@pytest.mark.parametrize(("view", "model"), [(view, model) for view, model, _, _ in PAIRS],
                         ids=[view.__name__ for view, *_ in PAIRS])
def test_view_has_every_field_of_mux_python_with_its_type_and_enum(view: type[views.View], model: Any) -> None:
    fields = view.model_fields
    problems = []
    for name, sdk_type in model.openapi_types.items():
        if (model.__name__, name) in NOT_OFFERED:
            continue
        if name not in fields:
            problems.append(f"{name}: in mux-python's {model.__name__}, not in {view.__name__}")
            continue
        annotation = fields[name].annotation
        if not _compatible(annotation, sdk_type):
            problems.append(f"{name}: {annotation} here, {sdk_type} in mux-python")
        ours, theirs = _literals(annotation), _mux_enum(model, name)
        if theirs is not None and (ours is None or not ours <= theirs):
            problems.append(f"{name}: answers {sorted(ours or ['any string'])}, Mux accepts {sorted(theirs)}")
    assert not problems, "\n".join(problems)


def _required_fields(text: str, interface: str) -> list[str]:
    """The fields a TypeScript interface declares without ``?`` (top level only)."""
    match = re.search(rf"^export interface {interface} \{{\n(.*?)^\}}", text, re.S | re.M)
    assert match is not None, f"no interface {interface}"
    return re.findall(r"^    ([a-z_]+): ", match.group(1), re.M)


@pytest.fixture(scope="module")
def mux_node_types() -> Path:
    from tests.js_clients import js_clients

    return js_clients() / "@mux" / "mux-node" / "resources"


@pytest.mark.parametrize(("view", "dts", "interface"), [(view, dts, name) for view, _, dts, name in PAIRS if dts],
                         ids=[view.__name__ for view, _, dts, _ in PAIRS if dts])
def test_view_always_has_what_mux_node_types_always_have(view: type[views.View], dts: str, interface: str,
                                                         mux_node_types: Path) -> None:
    required = _required_fields((mux_node_types / dts).read_text(encoding="utf-8"), interface)
    assert required or interface in ("Track", "StaticRendition", "PlaybackId"), f"{interface}: no fields parsed"
    missing = []
    for name in required:
        if (interface, name) in NOT_ALWAYS:
            continue
        field = view.model_fields.get(name)
        if field is None or not (field.is_required() or field.get_default(call_default_factory=True) is not None):
            missing.append(name)
    assert not missing, f"{view.__name__} may leave out {missing}, which @mux/mux-node's {interface} always has"


#: Routes answering the issue's resources, and the view their envelope's ``data`` holds.
ROUTES = {
    ("post", "/video/v1/assets"): "AssetView",
    ("get", "/video/v1/assets"): "AssetView",
    ("get", "/video/v1/assets/{asset_id}"): "AssetView",
    ("patch", "/video/v1/assets/{asset_id}"): "AssetView",
    ("put", "/video/v1/assets/{asset_id}/mp4-support"): "AssetView",
    ("put", "/video/v1/assets/{asset_id}/master-access"): "AssetView",
    ("post", "/video/v1/assets/{asset_id}/playback-ids"): "PlaybackIdView",
    ("get", "/video/v1/assets/{asset_id}/playback-ids"): "PlaybackIdView",
    ("get", "/video/v1/assets/{asset_id}/playback-ids/{playback_id}"): "PlaybackIdView",
    ("get", "/video/v1/playback-ids/{playback_id}"): "PlaybackIdTargetView",
    ("post", "/video/v1/assets/{asset_id}/tracks"): "TrackView",
    ("post", "/video/v1/assets/{asset_id}/static-renditions"): "StaticRenditionView",
    ("post", "/video/v1/uploads"): "UploadView",
    ("get", "/video/v1/uploads"): "UploadView",
    ("get", "/video/v1/uploads/{upload_id}"): "UploadView",
    ("put", "/video/v1/uploads/{upload_id}/cancel"): "UploadView",
    ("post", "/system/v1/signing-keys"): "NewSigningKeyView",
    ("get", "/system/v1/signing-keys"): "SigningKeyView",
    ("get", "/video/v1/signing-keys/{key_id}"): "SigningKeyView",
    ("post", "/system/v1/webhook-endpoints"): "WebhookEndpointView",
    ("get", "/system/v1/webhook-endpoints"): "WebhookEndpointView",
    ("patch", "/system/v1/webhook-endpoints/{endpoint_id}"): "WebhookEndpointView",
    ("get", "/system/v1/webhook-endpoints/{endpoint_id}/deliveries"): "WebhookDeliveryView",
    ("post", "/system/v1/webhooks"): "WebhookView",
    ("get", "/system/v1/webhooks"): "WebhookView",
    ("get", "/system/v1/webhooks/{webhook_id}"): "WebhookView",
}


def _free_form(schema: Any, components: dict[str, Any], seen: set[str], where: str) -> list[str]:
    """Places under ``schema`` that accept any JSON object or value."""
    if not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        seen.add(name)
        return _free_form(components[name], components, seen, name)
    if not schema or schema.get("additionalProperties") in (True, {}) or (
            schema.get("type") == "object" and not schema.get("properties") and "additionalProperties" not in schema):
        return [where]
    found = []
    for key, item in schema.get("properties", {}).items():
        found += _free_form(item, components, seen, f"{where}.{key}")
    for key in ("items", "additionalProperties"):
        found += _free_form(schema.get(key), components, seen, f"{where}[]")
    for key in ("anyOf", "oneOf", "allOf"):
        for item in schema.get(key, []):
            found += _free_form(item, components, seen, where)
    return found


def test_openapi_has_a_concrete_schema_for_every_resource_answer() -> None:
    from kinoray.serve.api import build_api

    document = build_api().openapi()
    components = document["components"]["schemas"]
    problems = []
    for (method, path), view in ROUTES.items():
        answers = document["paths"][path][method]["responses"]
        [success] = [answer for status, answer in answers.items() if status.startswith("2")]
        envelope = success["content"]["application/json"]["schema"]
        body = components[envelope["$ref"].rsplit("/", 1)[-1]]
        data = body["properties"]["data"]
        data = data.get("items", data)
        if data.get("$ref", "").rsplit("/", 1)[-1] != view:
            problems.append(f"{method.upper()} {path}: data is {data}, not {view}")
            continue
        if not components[view].get("properties"):
            problems.append(f"{view}: no properties")
        problems += [f"{method.upper()} {path}: free-form {place}"
                     for place in _free_form(envelope, components, set(), envelope["$ref"])]
    assert not problems, "\n".join(problems)


def test_views_leave_out_what_they_do_not_have_and_refuse_unknown_fields() -> None:
    view = views.PlaybackIdTargetView(id="abc", policy="public", object=views.PlaybackObject(type="asset", id="a"))
    assert view.dump() == {"id": "abc", "policy": "public", "object": {"type": "asset", "id": "a"}}
    with pytest.raises(ValueError, match="extra"):
        views.TrackView.model_validate({"id": "t", "type": "video", "max_heigth": 720})
    with pytest.raises(ValueError, match="policy"):
        views.PlaybackIdView.model_validate({"id": "p", "policy": "private"})
    endpoint = views.WebhookEndpointView(id="e", url="https://example.com/", enabled=True, secret="s" * 32,
                                         created_at="1", updated_at="1")
    assert endpoint.dump()["disabled_reason"] is None, "kinoray's own resource shows every field"


def test_every_list_route_takes_the_one_pagination_dependency() -> None:
    """A list answering ``next_cursor`` takes ``cursor``; every paged list takes ``limit`` and ``page`` with the
    same bounds (the dependency in :mod:`kinoray.serve.deps`)."""
    from kinoray.serve.api import build_api
    from kinoray.serve.deps import MAX_PAGE_SIZE

    document = build_api().openapi()
    components = document["components"]["schemas"]
    #: lists that are one resource's parts, not pages: no pagination, as in Mux
    unpaged = {"/video/v1/assets/{asset_id}/playback-ids", "/video/v1/assets/{asset_id}/input-info"}
    checked, problems = 0, []
    for path, operations in document["paths"].items():
        answer = operations.get("get", {}).get("responses", {}).get("200", {})
        schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
        if path.startswith("/data/") or path in unpaged or "$ref" not in schema:
            continue
        body = components[schema["$ref"].rsplit("/", 1)[-1]]
        if body.get("properties", {}).get("data", {}).get("type") != "array":
            continue
        query = {p["name"]: p["schema"] for p in operations["get"].get("parameters", []) if p["in"] == "query"}
        checked += 1
        if query.get("limit", {}).get("maximum") != MAX_PAGE_SIZE or "page" not in query:
            problems.append(f"{path}: limit/page missing or unbounded ({sorted(query)})")
        if "next_cursor" in body["properties"] and "cursor" not in query:
            problems.append(f"{path}: answers next_cursor but takes no cursor")
    assert checked >= 8 and not problems, "\n".join(problems)
