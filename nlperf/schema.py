"""``results/schema.json``, generated from the models of nlperf/models.py.

``python -m nlperf.results --schema`` prints it; a test checks the checked-in file against it.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema as cs

from nlperf.models import Summary

SCHEMA_ID = "nlperf/results/summary-v1"


class _ContractSchema(GenerateJsonSchema):
    """Contract readers need types and descriptions: no per-field titles, no defaults."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: cs.WithDefaultSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])


def summary_schema() -> dict[str, Any]:
    body = Summary.model_json_schema(schema_generator=_ContractSchema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            **body, "title": "nlperf run summary (summary.json)"}
