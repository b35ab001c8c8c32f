"""What every results model shares: the base classes, statuses and field types of
nlperf/models.py (kept apart so that a block may live in its own module, as
nlperf/models_capacity.py does)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema as cs


class Status(StrEnum):
    """Where a run stands; a case is one of the last three."""

    running = "running"
    complete = "complete"
    interrupted = "interrupted"
    failed = "failed"


CaseStatus = Literal[Status.complete, Status.failed, Status.interrupted]
Target = Literal["host", "vm"]
Accel = Literal["kvm", "tcg", "none"]
McSource = Literal["relay", "generator"]
OrderKind = Literal["round-robin", "random", "sequential"]


class _AbsentNotNull:
    """Schema of an ``Opt[T]`` key: T when present, and absent (not null) when it does not apply."""

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: cs.CoreSchema, handler: Any
                                     ) -> JsonSchemaValue:
        out = handler(schema)
        alternatives = [a for a in out.get("anyOf", []) if a != {"type": "null"}]
        if len(alternatives) == 1:
            out = {k: v for k, v in out.items() if k != "anyOf"} | alternatives[0]
        return out


T = TypeVar("T")
Opt = Annotated[T | None, _AbsentNotNull]
Count = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0)]
Phases = dict[str, Seconds]  # phase name -> wall-clock seconds (nlperf/phases.py)


class Model(BaseModel):
    """Typed, closed (unknown keys refused), validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def document(self) -> dict[str, Any]:
        """The JSON document: the keys that were set (read, constructed or assigned)."""
        return self.model_dump(mode="json", exclude_unset=True)


class OpenModel(Model):
    """Typed known keys; other keys are kept as they came (their producer owns them)."""

    model_config = ConfigDict(extra="allow")
