"""One turn's state: parsed chunks in, events out; typescript/src/core/chunks.ts mirrors it."""

from __future__ import annotations

import json
import math
from typing import Any, cast

from .errors import StreamError, make_error
from .events import Event, FinishReason, ToolCallEvent

__all__ = ["TurnState", "completion_to_chunk"]

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "end_turn": "stop",
    "eos": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _count(value: object) -> int:
    """A token count from the server; 0 when missing or not a finite number."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        # Integral floats become ints; a fractional count is kept as sent (TypeScript does too).
        return int(value) if value.is_integer() else cast(int, value)
    return 0


class TurnState:
    """The state of one turn: chunks in, events out; the usage and finish events at the end."""

    __slots__ = (
        "_finish_reason",
        "_last_index",
        "_next_index",
        "_parts",
        "_saw_tool_calls",
        "_slots",
        "_usage",
    )

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._saw_tool_calls = False
        # Tool-call slots: index -> [first id, first name], for deltas that come without an index.
        self._slots: dict[int, list[str | None]] = {}
        self._last_index: int | None = None
        self._next_index = 0

    @property
    def text(self) -> str:
        """The text streamed so far (what a StreamError carries)."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def feed(self, chunk: object) -> list[Event]:
        """The events of one parsed chunk: reasoning, text, tool calls; remembers finish and usage.

        A chunk carrying a non-null `error` raises StreamError `server_error`.
        """
        if not isinstance(chunk, dict):
            return []
        error = chunk.get("error")
        if error is not None:
            raise self.server_error(error)
        events: list[Event] = []
        choices = chunk.get("choices")
        if choices and isinstance(choices, list):
            choice = choices[0]
            if isinstance(choice, dict):
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    reasoning = delta.get("reasoning_content")
                    if not (reasoning and isinstance(reasoning, str)):
                        reasoning = delta.get("reasoning")
                    if reasoning and isinstance(reasoning, str):
                        events.append({"type": "reasoning", "content": reasoning})
                    content = delta.get("content")
                    if content and isinstance(content, str):
                        self._parts.append(content)
                        events.append({"type": "text", "content": content})
                    tool_calls = delta.get("tool_calls")
                    if tool_calls and isinstance(tool_calls, list):
                        for call in tool_calls:
                            if isinstance(call, dict):
                                events.append(self._tool_call(call))
                finish_reason = choice.get("finish_reason")
                if isinstance(finish_reason, str):
                    self._finish_reason = finish_reason
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        return events

    def finish(self, done: bool) -> list[Event]:
        """The closing events: one usage event if any usage was seen, then the finish event.

        `done` says whether the stream ended with `[DONE]` (a whole JSON answer counts as done).
        """
        events: list[Event] = []
        usage = self._usage
        if usage is not None:
            details = usage.get("prompt_tokens_details")
            cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
            events.append(
                {
                    "type": "usage",
                    "input_tokens": max(0, _count(usage.get("prompt_tokens")) - cached),
                    "output_tokens": _count(usage.get("completion_tokens")),
                    "cache_read_tokens": cached,
                }
            )
        reason: FinishReason
        if self._finish_reason is not None:
            reason = _FINISH_REASONS.get(self._finish_reason, "other")
            if self._saw_tool_calls and reason in ("stop", "other"):
                reason = "tool_calls"
        elif done:
            reason = "tool_calls" if self._saw_tool_calls else "stop"
        else:
            reason = "truncated"
        events.append({"type": "finish", "reason": reason})
        return events

    def server_error(self, error: object) -> StreamError:
        """StreamError `server_error` with the server's message and the text so far."""
        message = error.get("message") if isinstance(error, dict) else None
        detail = message if isinstance(message, str) else _compact(error)
        return cast(StreamError, make_error("server_error", detail=detail, partial_text=self.text))

    def _tool_call(self, call: dict[str, Any]) -> ToolCallEvent:
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        call_id = call.get("id")
        if not isinstance(call_id, str):
            call_id = None
        name = function.get("name")
        if not isinstance(name, str):
            name = None
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = "" if arguments is None else _compact(arguments)
        index = call.get("index")
        if isinstance(index, float) and index.is_integer():
            index = int(index)
        if not isinstance(index, int) or isinstance(index, bool):
            # No index (Ollama, Gemini, SGLang...): a new slot when the id or name changes.
            last = None if self._last_index is None else self._slots.get(self._last_index)
            new = (
                last is None
                or bool(call_id and last[0] and call_id != last[0])
                or bool(name and last[1] and name != last[1])
            )
            index = self._next_index if new or self._last_index is None else self._last_index
        slot = self._slots.get(index)
        if slot is None:
            self._slots[index] = [call_id or None, name or None]
        else:
            if not slot[0] and call_id:
                slot[0] = call_id
            if not slot[1] and name:
                slot[1] = name
        self._last_index = index
        if index >= self._next_index:
            self._next_index = index + 1
        self._saw_tool_calls = True
        return {
            "type": "tool_call",
            "index": index,
            "id": call_id,
            "name": name,
            "arguments": arguments,
        }


def completion_to_chunk(body: object) -> object:
    """A whole `chat.completion` (a 2xx JSON answer) as the one chunk a stream would have sent.

    Its message becomes the delta; each tool call gets its position in the list as its index.
    """
    if not isinstance(body, dict):
        return body
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict):
        return {**body, "choices": []}
    message = choice.get("message")
    delta: dict[str, Any] = dict(message) if isinstance(message, dict) else {}
    tool_calls = delta.get("tool_calls")
    if isinstance(tool_calls, list):
        delta["tool_calls"] = [
            {**call, "index": index} if isinstance(call, dict) else call
            for index, call in enumerate(tool_calls)
        ]
    return {**body, "choices": [{"delta": delta, "finish_reason": choice.get("finish_reason")}]}
