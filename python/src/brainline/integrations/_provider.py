"""What an adapter needs of its `llm`: any brainline provider, or a FallbackLLM (both adapters)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .._core.events import Turn


class Provider(Protocol):
    """A brainline provider or a FallbackLLM: stream() and complete() with the session arguments,
    warmup() and aclose()."""

    def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        call_id: str | None = None,
        caller: str | None = None,
        callee: str | None = None,
    ) -> Any: ...

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        call_id: str | None = None,
        caller: str | None = None,
        callee: str | None = None,
    ) -> Turn: ...

    async def warmup(self) -> None: ...

    async def aclose(self) -> None: ...
