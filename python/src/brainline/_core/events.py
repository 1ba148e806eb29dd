"""What a turn yields and what complete() returns; typescript/src/core/events.ts mirrors it.

Events are plain dicts (TypedDicts) with the same keys in both languages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Union

if TYPE_CHECKING:  # annotations only: NotRequired is typing's from Python 3.11
    from typing_extensions import NotRequired

    from .metrics import TurnMetrics

__all__ = [
    "Event",
    "FinishEvent",
    "FinishReason",
    "ProgressEvent",
    "ReasoningEvent",
    "RouteEvent",
    "RouteFailure",
    "RouteReason",
    "TextEvent",
    "ToolCall",
    "ToolCallEvent",
    "Turn",
    "Usage",
    "UsageEvent",
    "assemble_tool_calls",
]

FinishReason = Literal[
    "stop", "length", "tool_calls", "content_filter", "error", "other", "truncated"
]


class TextEvent(TypedDict):
    """Streamed text meant for the listener."""

    type: Literal["text"]
    content: str


class ToolCallEvent(TypedDict):
    """One tool-call delta as it arrived; `index` is always an integer (assigned when missing)."""

    type: Literal["tool_call"]
    index: int
    id: str | None
    name: str | None
    arguments: str


class ReasoningEvent(TypedDict):
    """Model reasoning, never mixed into the text."""

    type: Literal["reasoning"]
    content: str


class ProgressEvent(TypedDict):
    """A named server event that is not a chunk (`event: hermes.tool.progress`): never text.

    `data` is the event's data parsed as JSON, or the string itself when it is not JSON.
    """

    type: Literal["progress"]
    event: str
    data: Any


class UsageEvent(TypedDict):
    """Token counts of the turn: the last usage the server sent; input_tokens excludes cached ones."""

    type: Literal["usage"]
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int


class FinishEvent(TypedDict):
    """The last event of every turn that was neither cancelled nor failed; `metrics` is the
    turn's metrics record (the one on_metrics gets)."""

    type: Literal["finish"]
    reason: FinishReason
    metrics: NotRequired[TurnMetrics]


RouteReason = Literal["primary", "hedge", "failover"]


class RouteFailure(TypedDict):
    """An attempt of a FallbackLLM turn that failed before the winner's first event."""

    endpoint: int
    code: str


class RouteEvent(TypedDict):
    """The first event of every FallbackLLM turn (plain providers never emit it): the endpoint that
    answers (its index in the FallbackLLM's list and its provider key), how its attempt started
    (the first attempt, by the hedge timer, or because the attempts before it failed), and the
    attempts that failed before it, in the order they started.
    """

    type: Literal["route"]
    endpoint: int
    provider: str
    reason: RouteReason
    failed: list[RouteFailure]


# Union[...] rather than `|`: this alias is evaluated at runtime on Python 3.10 too.
Event = Union[  # noqa: UP007
    TextEvent, ToolCallEvent, ReasoningEvent, ProgressEvent, UsageEvent, FinishEvent, RouteEvent
]
"""Everything stream() yields."""


@dataclass(frozen=True)
class ToolCall:
    """A complete tool call: the deltas of one index joined."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class Usage:
    """Token counts of a turn (see UsageEvent)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int


@dataclass(frozen=True)
class Turn:
    """What complete() returns: the turn assembled from its events."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    """None when the turn was cancelled."""


async def collect_turn(events: AsyncIterator[Event]) -> Turn:
    """A whole turn from its events: what `complete()` returns (a route event is not part of it);
    finish_reason is None when the turn was cancelled."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCallEvent] = []
    usage: Usage | None = None
    finish_reason = None
    async for event in events:
        if event["type"] == "text":
            text.append(event["content"])
        elif event["type"] == "reasoning":
            reasoning.append(event["content"])
        elif event["type"] == "tool_call":
            calls.append(event)
        elif event["type"] == "usage":
            usage = Usage(event["input_tokens"], event["output_tokens"], event["cache_read_tokens"])
        elif event["type"] == "finish":
            finish_reason = event["reason"]
    return Turn("".join(text), "".join(reasoning), assemble_tool_calls(calls), usage, finish_reason)


def assemble_tool_calls(events: Iterable[Event]) -> list[ToolCall]:
    """Complete tool calls from tool_call events, by index (ascending).

    For each index: the first non-empty id, the first non-empty name (a name repeated in later
    deltas is not doubled) and the arguments of every delta joined.
    """
    calls: dict[int, tuple[str | None, str | None, list[str]]] = {}
    for event in events:
        if event["type"] != "tool_call":
            continue
        index, call_id, name = event["index"], event["id"], event["name"]
        call = calls.get(index)
        if call is None:
            calls[index] = (call_id or None, name or None, [event["arguments"]])
            continue
        first_id, first_name, arguments = call
        if (not first_id and call_id) or (not first_name and name):
            calls[index] = (first_id or call_id or None, first_name or name or None, arguments)
        arguments.append(event["arguments"])
    return [
        ToolCall(index, call_id, name, "".join(arguments))
        for index, (call_id, name, arguments) in sorted(calls.items())
    ]
