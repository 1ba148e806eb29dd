"""Optional OpenTelemetry GenAI spans and metrics; typescript/src/core/telemetry.ts mirrors it.

Off unless the `telemetry` option (unset: the env var TELEMETRY_ENV) turns it on; off, a turn
costs one check of `BaseLLM._telemetry`. `import brainline` never imports opentelemetry: this
module imports it only when a provider with telemetry on is constructed, and without the package
(`brainline[otel]`) telemetry stays off.

Each turn becomes one CLIENT span `chat {model}` on the global tracer provider and points of three
histograms on the global meter provider, named as the GenAI semantic conventions v1.41.0 name
them (the last release that holds them: later ones move and rename them, so the names are written
down here, not imported from a semantic-conventions package). The span is made when the turn ends,
from its metrics record, with the turn's start and end as explicit times and the context that was
current when the turn started as its parent: nothing runs per chunk but noting the response id
and model until both are seen (and, with content capture on, the reasoning and tool calls).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._generated.constants import CAPTURE_CONTENT_ENV, TELEMETRY_ENV, VERSION
from .chunks import TurnState
from .events import Event, ToolCallEvent, assemble_tool_calls

if TYPE_CHECKING:
    from .._generated.options import LLMConfig
    from .metrics import TurnMeter, TurnMetrics

__all__ = [
    "DURATION_BUCKETS",
    "TOKEN_BUCKETS",
    "Telemetry",
    "TurnTrace",
    "capture_on",
    "telemetry_for",
    "telemetry_on",
]

logger = logging.getLogger("brainline")

# The GenAI semantic conventions, v1.41.0.
SCOPE = "brainline"
OPERATION = "chat"
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_STREAM = "gen_ai.request.stream"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
REQUEST_SEED = "gen_ai.request.seed"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
TOKEN_TYPE = "gen_ai.token.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
OPERATION_DURATION = "gen_ai.client.operation.duration"
TOKEN_USAGE = "gen_ai.client.token.usage"
TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
# brainline's own attributes.
TURN_CANCELLED = "brainline.turn.cancelled"
TURN_ATTEMPTS = "brainline.turn.attempts"
REQUEST_ID = "brainline.request_id"
# The advised bucket boundaries (ExplicitBucketBoundaries advisory).
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

# The request parameters recorded when set: LLMConfig field -> attribute.
_REQUEST_PARAMETERS = (
    ("temperature", REQUEST_TEMPERATURE),
    ("max_tokens", REQUEST_MAX_TOKENS),
    ("top_p", REQUEST_TOP_P),
    ("frequency_penalty", REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", REQUEST_PRESENCE_PENALTY),
    ("stop", REQUEST_STOP_SEQUENCES),
    ("seed", REQUEST_SEED),
)
_ON = frozenset({"1", "true"})
_CAPTURE_ON = frozenset({"1", "true", "span_only", "span_and_event"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def telemetry_on(option: bool | None) -> bool:
    """The `telemetry` option; unset: TELEMETRY_ENV is "1" or "true" (any case)."""
    if option is not None:
        return option
    return os.environ.get(TELEMETRY_ENV, "").strip().lower() in _ON


def capture_on(option: bool | None) -> bool:
    """The `capture_message_content` option; unset: CAPTURE_CONTENT_ENV as the OpenTelemetry
    GenAI instrumentations read it ("true", "span_only", "span_and_event"; "1" too)."""
    if option is not None:
        return option
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in _CAPTURE_ON


class _Api:
    """The OpenTelemetry API, imported once, and the tracer and instruments of the global
    providers (made again when a provider is set after them)."""

    def __init__(self) -> None:
        from opentelemetry import context, metrics, trace

        self.context = context
        self.metrics = metrics
        self.trace = trace
        self.client = trace.SpanKind.CLIENT
        self._tracer_of: object = None
        self._tracer: Any = None
        self._meter_of: object = None
        self._instruments: tuple[Any, Any, Any] = (None, None, None)

    def tracer(self) -> Any:
        provider = self.trace.get_tracer_provider()
        if provider is not self._tracer_of:
            self._tracer = provider.get_tracer(SCOPE, VERSION)
            self._tracer_of = provider
        return self._tracer

    def instruments(self) -> tuple[Any, Any, Any]:
        """(operation duration, token usage, time to first chunk) histograms."""
        provider = self.metrics.get_meter_provider()
        if provider is not self._meter_of:
            meter = provider.get_meter(SCOPE, VERSION)
            self._instruments = (
                meter.create_histogram(
                    OPERATION_DURATION,
                    unit="s",
                    description="GenAI operation duration.",
                    explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
                ),
                meter.create_histogram(
                    TOKEN_USAGE,
                    unit="{token}",
                    description="Number of input and output tokens used.",
                    explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
                ),
                meter.create_histogram(
                    TIME_TO_FIRST_CHUNK,
                    unit="s",
                    description="Time to receive the first chunk in a streaming operation.",
                    explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
                ),
            )
            self._meter_of = provider
        return self._instruments


_api: _Api | None = None
_missing = False


def _load() -> _Api | None:
    """The OpenTelemetry API, or None when it is not installed (said once, at warning)."""
    global _api, _missing
    if _api is None and not _missing:
        try:
            _api = _Api()
        except ImportError:
            _missing = True
            logger.warning(
                "telemetry is on but opentelemetry-api is not installed "
                "(pip install 'brainline[otel]'): no spans or metrics"
            )
    return _api


def telemetry_for(provider_name: str, config: LLMConfig) -> Telemetry | None:
    """One provider's Telemetry when telemetry is on and the API importable, else None."""
    if not telemetry_on(config.telemetry):
        return None
    api = _load()
    return None if api is None else Telemetry(api, provider_name, config)


class Telemetry:
    """What every turn of one provider shares: the API, the request attributes (computed once)
    and whether content is captured."""

    __slots__ = ("api", "capture", "metric_attributes", "name", "reasoning", "span_attributes")

    def __init__(self, api: _Api, provider_name: str, config: LLMConfig) -> None:
        self.api = api
        self.capture = capture_on(config.capture_message_content)
        self.reasoning = config.reasoning
        self.name = f"{OPERATION} {config.model}"
        parts = urlsplit(config.base_url)
        address = parts.hostname or ""
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
        base: dict[str, Any] = {
            OPERATION_NAME: OPERATION,
            PROVIDER_NAME: provider_name,
            REQUEST_MODEL: config.model,
            SERVER_ADDRESS: address,
            SERVER_PORT: port,
        }
        self.metric_attributes = base
        span = dict(base)
        for field, attribute in _REQUEST_PARAMETERS:
            value = getattr(config, field)
            if value is None:
                continue
            if field == "stop":  # one stop sequence or a list of them: always a list
                value = [value] if isinstance(value, str) else list(value)
            span[attribute] = value
        span[REQUEST_STREAM] = True
        self.span_attributes = span

    def start(self, meter: TurnMeter, messages: Sequence[Mapping[str, Any]]) -> TurnState:
        """A turn starts: its TurnState (which notes the response id and model), and its trace
        on the meter, ended by the meter's finish()."""
        state = _TracedTurnState(self.reasoning, self.capture)
        meter.trace = TurnTrace(
            self,
            state,
            self.api.context.get_current(),
            time.time_ns() - int((time.monotonic() - meter.start) * 1e9),
            messages if self.capture else None,
        )
        return state


class _TracedTurnState(TurnState):
    """TurnState that also remembers the first response id and model the chunks carry and, when
    content is captured, the reasoning and tool calls."""

    __slots__ = ("calls", "ids_pending", "reasoning", "response_id", "response_model")

    def __init__(self, reasoning: str, capture: bool) -> None:
        super().__init__(reasoning)
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.ids_pending = True
        self.calls: list[ToolCallEvent] | None = [] if capture else None
        self.reasoning: list[str] = []

    def feed(self, chunk: object) -> list[Event]:
        if self.ids_pending and isinstance(chunk, dict):
            if self.response_id is None and isinstance(chunk.get("id"), str) and chunk["id"]:
                self.response_id = chunk["id"]
            if self.response_model is None and isinstance(chunk.get("model"), str):
                self.response_model = chunk["model"] or None
            self.ids_pending = self.response_id is None or self.response_model is None
        events = super().feed(chunk)
        if self.calls is not None:
            self._collect(events)
        return events

    def finish(self, done: bool) -> list[Event]:
        events = super().finish(done)
        if self.calls is not None:
            self._collect(events)
        return events

    def _collect(self, events: list[Event]) -> None:
        assert self.calls is not None
        for event in events:
            if event["type"] == "reasoning":
                self.reasoning.append(event["content"])
            elif event["type"] == "tool_call":
                self.calls.append(event)


class TurnTrace:
    """One turn's span and metric points, made from its metrics record when the turn ends."""

    __slots__ = ("messages", "parent", "start_ns", "state", "telemetry")

    def __init__(
        self,
        telemetry: Telemetry,
        state: _TracedTurnState,
        parent: Any,
        start_ns: int,
        messages: Sequence[Mapping[str, Any]] | None,
    ) -> None:
        self.telemetry = telemetry
        self.state = state
        self.parent = parent
        self.start_ns = start_ns
        self.messages = messages

    def end(self, record: TurnMetrics) -> None:
        """Record the span and the metrics; never raises (telemetry never breaks a turn)."""
        try:
            self._end(record)
        except Exception as exc:
            logger.warning("telemetry failed: %s; the turn goes on", type(exc).__name__)

    def _end(self, record: TurnMetrics) -> None:
        telemetry = self.telemetry
        api = telemetry.api
        state = self.state
        attributes = dict(telemetry.span_attributes)
        metric_attributes = dict(telemetry.metric_attributes)
        if state.response_id is not None:
            attributes[RESPONSE_ID] = state.response_id
        if state.response_model is not None:
            attributes[RESPONSE_MODEL] = state.response_model
            metric_attributes[RESPONSE_MODEL] = state.response_model
        finish_reason = record["finish_reason"]
        if finish_reason is not None:
            attributes[RESPONSE_FINISH_REASONS] = [finish_reason]
        input_tokens = output_tokens = None
        if record["input_tokens"] is not None:
            cached = record["cache_read_tokens"] or 0
            input_tokens = record["input_tokens"] + cached  # the convention counts cached too
            output_tokens = record["output_tokens"]
            attributes[USAGE_INPUT_TOKENS] = input_tokens
            attributes[USAGE_OUTPUT_TOKENS] = output_tokens
            attributes[USAGE_CACHE_READ_INPUT_TOKENS] = cached
        first_chunk = record["first_progress_ms"]
        if first_chunk is not None:
            attributes[RESPONSE_TIME_TO_FIRST_CHUNK] = first_chunk / 1000
        attributes[TURN_ATTEMPTS] = record["attempts"]
        if record["request_id"] is not None:
            attributes[REQUEST_ID] = record["request_id"]
        token_attributes = dict(metric_attributes)
        error_code = record["error_code"]
        if error_code is not None:
            attributes[ERROR_TYPE] = error_code
            metric_attributes[ERROR_TYPE] = error_code
        elif record["cancelled"]:
            attributes[TURN_CANCELLED] = True
            metric_attributes[TURN_CANCELLED] = True
        if self.messages is not None:
            attributes[INPUT_MESSAGES] = _encode(_input_messages(self.messages))
            if finish_reason is not None:
                attributes[OUTPUT_MESSAGES] = _encode(_output_messages(state, finish_reason))

        end_ns = self.start_ns + int(record["duration_ms"] * 1e6)
        span = api.tracer().start_span(
            telemetry.name,
            context=self.parent,
            kind=api.client,
            attributes=attributes,
            start_time=self.start_ns,
        )
        if error_code is not None:
            span.set_status(api.trace.Status(api.trace.StatusCode.ERROR, error_code))
        span.end(end_time=end_ns)

        duration, tokens, first = api.instruments()
        duration.record(record["duration_ms"] / 1000, metric_attributes)
        if first_chunk is not None:
            first.record(first_chunk / 1000, metric_attributes)
        if input_tokens is not None:
            tokens.record(input_tokens, {**token_attributes, TOKEN_TYPE: "input"})
            tokens.record(output_tokens, {**token_attributes, TOKEN_TYPE: "output"})


def _text_parts(content: object) -> list[dict[str, Any]]:
    """A message's content as GenAI parts: text as text, any other part by its type only."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping):
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    parts.append({"type": "text", "content": part["text"]})
                else:
                    kind = part.get("type")
                    parts.append({"type": kind if isinstance(kind, str) else "unknown"})
    return parts


def _input_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages in the GenAI input-messages shape (gen-ai-input-messages.json)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            parts: list[dict[str, Any]] = [
                {
                    "type": "tool_call_response",
                    "id": message.get("tool_call_id"),
                    "response": message.get("content"),
                }
            ]
        else:
            parts = _text_parts(message.get("content"))
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, Mapping):
                        function = call.get("function")
                        function = function if isinstance(function, Mapping) else {}
                        parts.append(
                            {
                                "type": "tool_call",
                                "id": call.get("id"),
                                "name": function.get("name"),
                                "arguments": function.get("arguments"),
                            }
                        )
        out.append({"role": role, "parts": parts})
    return out


def _output_messages(state: _TracedTurnState, finish_reason: str) -> list[dict[str, Any]]:
    """The answer in the GenAI output-messages shape (gen-ai-output-messages.json)."""
    parts: list[dict[str, Any]] = []
    reasoning = "".join(state.reasoning)
    if reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    text = state.text
    if text:
        parts.append({"type": "text", "content": text})
    for call in assemble_tool_calls(state.calls or []):
        parts.append(
            {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}
        )
    return [{"role": "assistant", "parts": parts, "finish_reason": finish_reason}]
