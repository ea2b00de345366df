"""The registry: kube-apiserver's create, update, patch, delete, get and list rules.

This is the generic registry store (``apiserver/pkg/registry/generic/registry/store.go``) and the
REST handlers in front of it, reduced to what the emulated types use, over [`Store`][Store]. It
knows nothing about HTTP: it takes decoded requests and returns objects or raises
[`ApiError`][ApiError]. The checks run in the apiserver's order, because which error a client sees
when a request is wrong in two ways is part of the behaviour:

1. decoding (400); namespace and name agreement with the URL (400);
2. existence where PUT cannot create (404); UID precondition (409); resourceVersion parsing (500);
3. resourceVersion required (422) or current (409);
4. validation (422); for creates, then: resourceVersion set (500) and existence (409).
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import uuid
from collections.abc import Mapping
from typing import Any

from ._decode import DecodeError, format_time, go_json_loads, json_kind, summarize
from ._patch import PatchError, json_patch, merge_patch
from ._resources import ResourceType
from ._selectors import Predicate
from ._server_clock import ServerClock
from ._status import ApiError, status_object
from ._store import Store
from ._validation import FieldError, validate_object_meta

__all__ = ["Registry"]

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

# Metadata only the server writes: dropped from a create's body, taken from the stored object on
# update (FillObjectMetaSystemFields, BeforeCreate, BeforeUpdate).
_CLEARED_ON_CREATE = (
    "selfLink",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
)
_KEPT_ON_UPDATE = (
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)

# names.SimpleNameGenerator: five characters from an alphabet without vowels or look-alikes.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _parse_rv(value: object) -> int:
    """``APIObjectVersioner.ObjectResourceVersion``: "" is 0; garbage is a plain Go error."""
    if value in (None, ""):
        return 0
    text = str(value)
    if not text.isascii() or not text.isdigit():
        raise ApiError.unknown(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    number = int(text)
    if number >= 2**64:
        raise ApiError.unknown(f'strconv.ParseUint: parsing "{text}": value out of range')
    return number


class Registry:
    """kube-apiserver's storage semantics for the served types."""

    def __init__(self, store: Store, clock: ServerClock) -> None:
        self.store = store
        self.clock = clock

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, rt: ResourceType, data: bytes, content_type: str = JSON) -> dict[str, Any]:
        """Decode a create/update body into the object kube-apiserver would store."""
        if _media_type(content_type or JSON) not in (JSON, "*/*", ""):
            raise ApiError.unsupported_media_type(
                content_type, [JSON, "application/yaml", "application/vnd.kubernetes.protobuf"]
            )
        try:
            document = go_json_loads(data)
        except DecodeError as exc:
            raise ApiError.bad_request(
                f"the object provided is unrecognized (must be of type {rt.kind}): "
                f"couldn't get version/kind; json parse error: {exc} ({summarize(data)})"
            ) from None
        if document is None:
            document = {}  # null decodes into the zero object, which validation then refuses
        if not isinstance(document, dict):
            raise ApiError.bad_request(
                f"the object provided is unrecognized (must be of type {rt.kind}): couldn't get "
                f"version/kind; json parse error: json: cannot unmarshal {json_kind(document)} "
                "into Go value of "
                'type struct { APIVersion string "json:\\"apiVersion,omitempty\\""; Kind string '
                '"json:\\"kind,omitempty\\"" }'
                f" ({summarize(data)})"
            )
        return self.decode_document(rt, document)

    def decode_document(self, rt: ResourceType, document: Mapping[str, Any]) -> dict[str, Any]:
        api_version = document.get("apiVersion")
        kind = document.get("kind")
        if api_version and api_version != rt.api_version:
            raise ApiError.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
            )
        if kind and kind != rt.kind:
            raise ApiError.bad_request(
                f'{kind} in version "{rt.version}" cannot be handled as a {rt.kind}: no kind '
                f'"{kind}" is registered for version "{rt.api_version}" in scheme '
                '"pkg/api/legacyscheme/scheme.go:30"'
            )
        try:
            obj = rt.body.decode(document)
        except DecodeError as exc:
            raise ApiError.bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: {exc}'
            ) from None
        rt.defaults(obj)
        return obj

    @staticmethod
    def _ensure_namespace(obj: dict[str, Any], namespace: str) -> None:
        meta = obj["metadata"]
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise ApiError.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = namespace

    def _validate(
        self,
        rt: ResourceType,
        obj: Mapping[str, Any],
        name: str,
        old: Mapping[str, Any] | None = None,
    ) -> None:
        errors = validate_object_meta(obj["metadata"], rt.name_rule) + rt.validate_spec(obj)
        if old is not None:
            errors += rt.validate_update(obj, old)
        if errors:
            raise ApiError.invalid(rt, name, errors)

    # -- verbs ------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Mapping[str, Any]:
        obj = self.store.get(rt, namespace, name)
        if obj is None:
            raise ApiError.not_found(rt, name)
        return obj

    def list(
        self, rt: ResourceType, predicate: Predicate, limit: int | None, token: str | None
    ) -> dict[str, Any]:
        """A ``…List``. ``limit``/``continue`` page through the *current* state, not a snapshot."""
        items = self.store.list(rt, predicate)
        start = 0
        if token:
            try:
                after = json.loads(base64.urlsafe_b64decode(token.encode()))
                keys = [(o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in items]
                start = next((i for i, k in enumerate(keys) if list(k) > after), len(items))
            except (ValueError, TypeError, KeyError):
                raise ApiError.bad_request("continue key is not valid") from None
        meta: dict[str, Any] = {"resourceVersion": str(self.store.revision)}
        page = items[start:]
        if limit and limit > 0 and len(page) > limit:
            page = page[:limit]
            last = page[-1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps([last.get("namespace", ""), last["name"]]).encode()
            ).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": meta,
            "items": page,
        }

    def create(self, rt: ResourceType, namespace: str, obj: dict[str, Any]) -> Mapping[str, Any]:
        """POST: a new object, or 409 AlreadyExists."""
        self._ensure_namespace(obj, namespace)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
            meta["name"] = meta["generateName"] + suffix
        name = meta.get("name") or ""
        self._prepare_create(obj)
        self._validate(rt, obj, name)
        return self._store_create(rt, obj, name)

    def _prepare_create(self, obj: dict[str, Any]) -> None:
        """``FillObjectMetaSystemFields`` and ``BeforeCreate``: server-owned metadata."""
        meta = obj["metadata"]
        for server_owned in _CLEARED_ON_CREATE:
            meta.pop(server_owned, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = format_time(self.clock.now())

    def _store_create(self, rt: ResourceType, obj: dict[str, Any], name: str) -> Mapping[str, Any]:
        try:
            rv = _parse_rv(obj["metadata"].get("resourceVersion"))
        except ApiError:
            rv = 0  # the storage layer only refuses a version it can parse
        if rv:
            raise ApiError.unknown("resourceVersion should not be set on objects to be created")
        if self.store.get(rt, obj["metadata"]["namespace"], name) is not None:
            raise ApiError.already_exists(rt, name)
        return self.store.put(rt, _canonical(obj))

    def update(
        self, rt: ResourceType, namespace: str, name: str, obj: dict[str, Any]
    ) -> tuple[Mapping[str, Any], bool]:
        """PUT: replace (or, where the type allows it, create). Returns (object, created)."""
        self._ensure_namespace(obj, namespace)
        self._check_name(obj, name)
        return self._update(rt, namespace, name, obj)

    @staticmethod
    def _check_name(obj: Mapping[str, Any], name: str) -> None:
        """The handlers' ``checkName``: the body names the object of the URL."""
        body_name = obj["metadata"].get("name") or ""
        if not body_name:
            raise ApiError.bad_request(
                f"the name of the object ({name} based on URL) was undeterminable: "
                "name must be provided"
            )
        if body_name != name:
            raise ApiError.bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )

    def _update(
        self, rt: ResourceType, namespace: str, name: str, obj: dict[str, Any]
    ) -> tuple[Mapping[str, Any], bool]:
        existing = self.store.get(rt, namespace, name)
        if existing is None and not rt.allow_create_on_update:
            raise ApiError.not_found(rt, name)
        meta = obj["metadata"]
        uid = meta.get("uid")
        if uid:
            # A UID in the body is a precondition (defaultUpdatedObjectInfo.Preconditions).
            current_uid = (existing or {}).get("metadata", {}).get("uid", "")
            if uid != current_uid:
                raise ApiError.conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {uid}, UID in object meta: {current_uid}",
                )
        if existing is None:
            _parse_rv(meta.get("resourceVersion"))
            self._prepare_create(obj)
            self._validate(rt, obj, name)
            meta.pop("resourceVersion", None)
            return self.store.put(rt, _canonical(obj)), True
        rv = _parse_rv(meta.get("resourceVersion"))
        current = _parse_rv(existing["metadata"].get("resourceVersion"))
        if rv == 0 and not rt.allow_unconditional_update:
            # kube builds this error from the resource, not the kind: "leases.coordination…".
            raise ApiError.invalid(
                rt,
                name,
                [
                    FieldError(
                        "invalid",
                        "metadata.resourceVersion",
                        0,
                        "must be specified for an update",
                    )
                ],
                kind=rt.plural,
            )
        if rv and rv != current:
            raise ApiError.conflict(rt, name)
        # BeforeUpdate: what the client cannot change comes from the stored object.
        old_meta = existing["metadata"]
        for server_owned in _CLEARED_ON_CREATE:
            meta.pop(server_owned, None)
        for kept in _KEPT_ON_UPDATE:
            if kept in old_meta:
                meta[kept] = old_meta[kept]
        self._validate(rt, obj, name, existing)
        return self.store.put(rt, _canonical(obj)), False

    def patch(
        self, rt: ResourceType, namespace: str, name: str, data: bytes, content_type: str
    ) -> Mapping[str, Any]:
        """PATCH: apply to the stored object, then update it (never creates)."""
        media = _media_type(content_type)
        if media not in PATCH_TYPES:
            raise ApiError.unsupported_media_type(
                content_type, [JSON_PATCH, MERGE_PATCH, "application/apply-patch+yaml"]
            )
        existing = self.store.get(rt, namespace, name)
        if existing is None:
            raise ApiError.not_found(rt, name)
        try:
            patch = go_json_loads(data)
        except DecodeError as exc:
            # jsonpatch.MergePatch has one message for every malformed merge patch.
            raise ApiError.bad_request(
                "Invalid JSON Patch" if media == MERGE_PATCH else str(exc)
            ) from None
        current = copy.deepcopy(rt.with_kind(existing))
        try:
            if media == JSON_PATCH:
                patched = json_patch(current, patch)
            else:
                patched = merge_patch(current, patch, strategic=media == STRATEGIC_MERGE_PATCH)
        except PatchError as exc:
            raise ApiError(
                422,
                "Invalid",
                "the server rejected our request due to an error in our request",
                {
                    "causes": [
                        {"reason": "FieldValueInvalid", "message": str(exc), "field": "patch"}
                    ]
                },
            ) from None
        if not isinstance(patched, dict):
            raise ApiError.bad_request(f"the patched object is not a {rt.kind}")
        obj = self.decode_document(rt, patched)
        self._ensure_namespace(obj, namespace)
        self._check_name(obj, name)
        stored, _ = self._update(rt, namespace, name, obj)
        return stored

    def delete(
        self, rt: ResourceType, namespace: str, name: str, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """DELETE with optional ``preconditions``; answers a Status, as for built-in types."""
        existing = self.store.get(rt, namespace, name)
        if existing is None:
            raise ApiError.not_found(rt, name)
        meta = existing["metadata"]
        preconditions = options.get("preconditions") or {}
        if not isinstance(preconditions, dict):
            preconditions = {}
        uid = preconditions.get("uid")
        if uid is not None and uid != meta.get("uid"):
            raise ApiError.conflict(
                rt,
                name,
                f"the UID in the precondition ({uid}) does not match the UID in record "
                f"({meta.get('uid')}). The object might have been deleted and then recreated",
                kind=rt.kind,
            )
        rv = preconditions.get("resourceVersion")
        if rv is not None and rv != meta.get("resourceVersion"):
            raise ApiError.conflict(
                rt,
                name,
                f"the ResourceVersion in the precondition ({rv}) does not match the "
                f"ResourceVersion in record ({meta.get('resourceVersion')}). The object might "
                "have been modified",
                kind=rt.kind,
            )
        self.store.delete(rt, namespace, name)
        return status_object(
            status="Success",
            details={"name": name, "group": rt.group, "kind": rt.plural, "uid": meta.get("uid")},
        )

    def delete_collection(self, rt: ResourceType, predicate: Predicate) -> dict[str, Any]:
        """DELETE on a collection: removes every match, answers the list of what was removed."""
        removed = [
            self.store.delete(rt, o["metadata"].get("namespace", ""), o["metadata"]["name"])
            for o in self.store.list(rt, predicate)
        ]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.store.revision)},
            "items": removed,
        }


_META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)


def _canonical(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Fields in Go struct order (metadata first), without kind/apiVersion, as stored."""
    meta = obj["metadata"]
    ordered_meta = {k: meta[k] for k in _META_ORDER if k in meta}
    ordered_meta.update((k, v) for k, v in meta.items() if k not in ordered_meta)
    rest = {k: v for k, v in obj.items() if k not in ("metadata", "kind", "apiVersion")}
    return {"metadata": ordered_meta, **rest}
