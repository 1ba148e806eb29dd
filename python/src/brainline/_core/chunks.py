"""One turn's state: parsed chunks in, events out; typescript/src/core/chunks.ts mirrors it."""

from __future__ import annotations

import json
import json.scanner
import math
from typing import Any, cast

from .errors import StreamError, make_error
from .events import Event, FinishReason, ProgressEvent, ToolCallEvent

__all__ = ["TurnState", "completion_to_chunk"]

_BLANK = " \t\r\n"  # JSON's whitespace, the same in both languages
_OPEN = "<think>"
_CLOSE = "</think>"
_NOT_JSON: Any = object()  # json.loads failed (a sentinel: null is valid JSON)
# What json.loads runs, built once. (typeshed types make_scanner's argument as a scanner; it takes
# the decoder whose settings it copies.)
_scan = json.scanner.make_scanner(cast(Any, json.JSONDecoder()))

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


def _held_back(buf: str, tag: str) -> int:
    """How many characters at the end of buf could be the start of tag (0 when none)."""
    at = buf.rfind("<", max(0, len(buf) - len(tag) + 1))
    return len(buf) - at if at >= 0 and tag.startswith(buf[at:]) else 0


def _details_text(details: object) -> str | None:
    """The text of `reasoning_details` (DeepSeek V3.2, OpenRouter): a list of objects with `text`."""
    if not isinstance(details, list):
        return None
    parts = [
        item["text"]
        for item in details
        if isinstance(item, dict) and isinstance(item.get("text"), str)
    ]
    return "".join(parts) or None


class TurnState:
    """The state of one turn: chunks in, events out; the usage and finish events at the end."""

    __slots__ = (
        "_dropped",
        "_emit_reasoning",
        "_finish_reason",
        "_fresh",
        "_held",
        "_last_index",
        "_next_index",
        "_parts",
        "_plain",
        "_saw_tool_calls",
        "_slots",
        "_think",
        "_usage",
    )

    def __init__(self, reasoning: str = "emit") -> None:
        """`reasoning`: "emit" (reasoning events) or "drop" (none); never text either way."""
        self._emit_reasoning = reasoning != "drop"
        self._dropped = False  # reasoning dropped since the last take_dropped(): still progress
        self._parts: list[str] = []
        # <think> blocks in content: inside one, the content held back because it may be the start
        # of a tag, and whether no content came yet (a leading stray </think> then ends reasoning).
        self._think = False
        self._held = ""
        self._fresh = True
        self._plain = True  # outside a block with nothing held: content without "<" is plain text
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._saw_tool_calls = False
        # Tool-call slots: index -> [first id, first name], for deltas that come without an index.
        self._slots: dict[int, list[str | None]] = {}
        self._last_index: int | None = None
        self._next_index = 0

    def take_dropped(self) -> bool:
        """Whether reasoning was dropped (reasoning="drop") since the last call: it is progress
        for the first-token and idle clocks even though no event carries it."""
        dropped, self._dropped = self._dropped, False
        return dropped

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
        # The chunk of almost every event, first: one choice whose delta holds only plain text or
        # only the next arguments of the open tool call, and nothing else to remember. Anything
        # else, or anything unexpected, takes the general path below, which gives the same events.
        choices = chunk.get("choices")
        if (
            type(choices) is list
            and len(choices) == 1
            and chunk.get("usage") is None
            and chunk.get("error") is None
            and "x_groq" not in chunk
        ):
            choice = choices[0]
            delta = choice.get("delta") if type(choice) is dict else None
            if type(delta) is dict and len(delta) == 1 and choice.get("finish_reason") is None:
                content = delta.get("content")
                if type(content) is str and content and self._plain and "<" not in content:
                    self._fresh = False
                    self._parts.append(content)
                    return [{"type": "text", "content": content}]
                calls = delta.get("tool_calls")
                if type(calls) is list and len(calls) == 1:
                    event = self._next_arguments(calls[0])
                    if event is not None:
                        return [event]
        error = chunk.get("error")
        if error is not None:
            raise self.server_error(error)
        events: list[Event] = []
        if choices and isinstance(choices, list):
            choice = choices[0]
            if isinstance(choice, dict):
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    # One reasoning field per chunk: OpenRouter sends the same text in two.
                    reasoning = delta.get("reasoning_content")
                    if not (reasoning and isinstance(reasoning, str)):
                        reasoning = delta.get("reasoning")
                        if not (reasoning and isinstance(reasoning, str)):
                            details = delta.get("reasoning_details")
                            reasoning = _details_text(details) if details else None
                    if reasoning and isinstance(reasoning, str):
                        if self._emit_reasoning:
                            events.append({"type": "reasoning", "content": reasoning})
                        else:
                            self._dropped = True
                    content = delta.get("content")
                    if content and isinstance(content, str):
                        if self._plain and "<" not in content:
                            self._fresh = False
                            self._parts.append(content)
                            events.append({"type": "text", "content": content})
                        else:
                            self._content(content, events)
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
        else:
            vendor = chunk.get("x_groq")  # Groq puts usage under x_groq
            if isinstance(vendor, dict) and isinstance(vendor.get("usage"), dict):
                self._usage = vendor["usage"]
        return events

    def feed_event(self, name: str | None, data: str) -> list[Event]:
        """The events of one dispatched SSE event other than `[DONE]`.

        Blank data and data starting with `:` (a keep-alive a proxy wrapped in `data:`) give
        nothing. An event named `error` raises StreamError `server_error`; another named event is
        a progress event (its data parsed as JSON, else kept as a string); an unnamed (or
        `message`) event is a chunk, and data that is not JSON raises StreamError `malformed`.
        """
        if name is None or name == "message":
            chunk = _parse(data)
            if chunk is _NOT_JSON:
                if _keep_alive(data):
                    return []
                raise self.malformed(f"data is not JSON: {data[:200]}")
            return self.feed(chunk)
        if _keep_alive(data):
            return []
        parsed = _parse(data)
        if parsed is _NOT_JSON:
            parsed = data
        if name == "error":
            error = parsed.get("error") if isinstance(parsed, dict) else None
            raise self.server_error(parsed if error is None else error)
        event: ProgressEvent = {"type": "progress", "event": name, "data": parsed}
        return [event]

    def feed_body(self, text: str) -> list[Event]:
        """All the events of a whole 2xx JSON answer (a server that ignored `stream`).

        An error object raises StreamError `server_error`; a `chat.completion` gives the events a
        stream would have given, finish included; an empty body or anything else raises
        StreamError `malformed`, never a silent empty turn.
        """
        if not text.strip(_BLANK):
            raise self.malformed("empty response body")
        body = _parse(text)
        if body is _NOT_JSON:
            raise self.malformed(f"data is not JSON: {text[:200]}")
        if not isinstance(body, dict) or ("choices" not in body and body.get("error") is None):
            raise self.malformed(f"not a chat completion: {text[:200]}")
        return [*self.feed(completion_to_chunk(body)), *self.finish(True)]

    def malformed(self, detail: str) -> StreamError:
        """StreamError `malformed` with the text so far."""
        return cast(StreamError, make_error("malformed", detail=detail, partial_text=self.text))

    def _content(self, content: str, events: list[Event]) -> None:
        """Content that may hold `<think>` tags, split anywhere across chunks."""
        buf = self._held + content
        self._held = ""
        if self._fresh:
            if len(buf) < len(_CLOSE) and _CLOSE.startswith(buf):
                self._held = buf
                self._plain = False
                return
            self._fresh = False
            if buf.startswith(_CLOSE):
                # Some servers leave out the opening tag: a leading </think> ends the reasoning.
                buf = buf[len(_CLOSE) :]
        while buf:
            tag = _CLOSE if self._think else _OPEN
            at = buf.find(tag)
            if at < 0:
                keep = _held_back(buf, tag)
                if keep:
                    self._held = buf[-keep:]
                    buf = buf[:-keep]
                self._emit(buf, events)
                break
            self._emit(buf[:at], events)
            self._think = not self._think
            buf = buf[at + len(tag) :]
        self._plain = not self._think and not self._held

    def _emit(self, piece: str, events: list[Event]) -> None:
        if not piece:
            return
        if self._think:
            if self._emit_reasoning:
                events.append({"type": "reasoning", "content": piece})
            else:
                self._dropped = True
        else:
            self._parts.append(piece)
            events.append({"type": "text", "content": piece})

    def usage_counts(self) -> tuple[int, int, int] | None:
        """The usage seen so far as (input (uncached), output, cache read) tokens; None without."""
        usage = self._usage
        if usage is None:
            return None
        details = usage.get("prompt_tokens_details")
        cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
        return (
            max(0, _count(usage.get("prompt_tokens")) - cached),
            _count(usage.get("completion_tokens")),
            cached,
        )

    def finish(self, done: bool) -> list[Event]:
        """The closing events: one usage event if any usage was seen, then the finish event.

        `done` says whether the stream ended with `[DONE]` (a whole JSON answer counts as done).
        Content held back as a possible tag comes first, as what it turned out to be.
        """
        events: list[Event] = []
        if self._held:
            held, self._held, self._plain = self._held, "", not self._think
            self._emit(held, events)
        usage = self.usage_counts()
        if usage is not None:
            events.append(
                {
                    "type": "usage",
                    "input_tokens": usage[0],
                    "output_tokens": usage[1],
                    "cache_read_tokens": usage[2],
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
        message = error.get("message") if isinstance(error, dict) else error
        detail = message if isinstance(message, str) else _compact(error)
        return cast(StreamError, make_error("server_error", detail=detail, partial_text=self.text))

    def _next_arguments(self, call: object) -> ToolCallEvent | None:
        """`{"index": i, "function": {"arguments": "..."}}` for the slot the last call used (the
        usual continuation of a tool call) as its event; None for any other call."""
        if type(call) is not dict or len(call) != 2:
            return None
        index = call.get("index")
        function = call.get("function")
        if index != self._last_index or type(index) is not int or type(function) is not dict:
            return None
        arguments = function.get("arguments")
        if len(function) != 1 or type(arguments) is not str:
            return None
        return {
            "type": "tool_call",
            "index": index,
            "id": None,
            "name": None,
            "arguments": arguments,
        }

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


def _loads(data: str) -> Any:
    """json.loads(data), faster: the C scanner json.loads ends in, built once, and json.loads
    itself for anything the scanner alone does not take whole (whitespace around the value, an
    error: its exception is the one json.loads raises)."""
    try:
        value, end = _scan(data, 0)
    except (StopIteration, ValueError, RecursionError):
        return json.loads(data)
    return value if end == len(data) else json.loads(data)


def _parse(text: str) -> Any:
    """_loads(text), or _NOT_JSON when the text is not JSON. Callers raise their errors outside
    any except block: a JSONDecodeError as cause or context would keep the whole text (`doc`),
    which may echo a key; their messages carry its start, scrubbed."""
    try:
        return _loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _keep_alive(data: str) -> bool:
    """Blank data, or data starting with `:` (`data: : keepalive` from proxies): not a chunk."""
    stripped = data.lstrip(_BLANK)
    return not stripped or stripped[0] == ":"


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
    if not isinstance(message, dict):
        message = choice.get("delta")  # a lone chunk sent as JSON
    delta: dict[str, Any] = dict(message) if isinstance(message, dict) else {}
    tool_calls = delta.get("tool_calls")
    if isinstance(tool_calls, list):
        delta["tool_calls"] = [
            {**call, "index": index} if isinstance(call, dict) else call
            for index, call in enumerate(tool_calls)
        ]
    return {**body, "choices": [{"delta": delta, "finish_reason": choice.get("finish_reason")}]}
