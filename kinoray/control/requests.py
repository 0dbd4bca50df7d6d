"""The base of every JSON request body the API accepts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

__all__ = ["RequestModel", "storable_text"]


def storable_text(value: Any) -> None:
    """Raise ``ValueError`` if any string inside ``value`` (dicts and lists walked, keys included) holds a NUL
    character or a lone UTF-16 surrogate: PostgreSQL cannot store the first, UTF-8 cannot encode the second."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text must be valid Unicode (no unpaired surrogates)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            storable_text(key)
            storable_text(item)
    elif isinstance(value, list | tuple):
        for item in value:
            storable_text(item)


class RequestModel(BaseModel):
    """Unknown fields are refused, and so is text no database could store (on SQLite as on PostgreSQL)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _storable(self) -> RequestModel:
        # declared fields only (ignored extras are never stored); nested request models check themselves
        for value in self.__dict__.values():
            if not isinstance(value, BaseModel):
                storable_text(value if not isinstance(value, list) else
                              [item for item in value if not isinstance(item, BaseModel)])
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """Say the same in the OpenAPI document: free-text fields without a pattern of their own get one that
        excludes NUL (fields with a pattern exclude it in that pattern)."""
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        for field in target.get("properties", {}).values():
            for option in [field, *field.get("anyOf", [])]:
                if option.get("type") == "string" and "pattern" not in option and "enum" not in option \
                        and "const" not in option and "format" not in option:
                    option["pattern"] = "^[^\\x00]*$"
        return schema
