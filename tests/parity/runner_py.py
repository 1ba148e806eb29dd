"""Run parity cases through brainline's public Python API and return their transcripts.

A case (tests/parity/cases/<id>.json, format in case.schema.json and docs/testing.md) names a
provider, its options, the call and what the mock server does. ``run_case`` builds the provider
with ``import brainline``, runs the call against this case's route on the mock server
(``{origin}/py/<id>/v1``), and returns a transcript: the requests the server recorded (normalised),
the events, the error, and whether the server saw the client close the connection.

The TypeScript runner (runner_ts.mjs) produces the same raw record; ``normalize`` turns either into
the transcript, so both languages are observed and normalised by one piece of code.

Standalone: ``python tests/parity/runner_py.py [CASE_ID ...]`` starts a mock server and prints the
transcripts as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CASES_DIR = HERE / "cases"
SCHEMA_PATH = HERE / "case.schema.json"
# "ts-fetch": the TypeScript package through its fetch transport (runner_ts.mjs --transport fetch).
RUNNERS = ("py", "ts", "ts-fetch")

PROVIDER_CLASSES = {
    "custom": "CustomLLM",
    "openai_compatible": "OpenAICompatibleLLM",
    "hermes": "HermesLLM",
    "openclaw": "OpenClawLLM",
    "ollama": "OllamaLLM",
    "lmstudio": "LMStudioLLM",
    "vllm": "VLLMLLM",
    "mistral": "MistralLLM",
}

# Added by the HTTP layer, not by brainline: they differ between httpx and transport.ts and are not
# part of the contract (docs/runtime.md lists the headers brainline sends).
TRANSPORT_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "content-length",
        "transfer-encoding",
        "accept-encoding",
        "te",
        "expect",
    }
)

# What httpx and transport.ts both send when the caller set none (warmup).
LIBRARY_DEFAULT_HEADERS = frozenset({("accept", "*/*")})

# Added by Node's fetch (undici, as the Fetch standard says) to every request: the "ts-fetch"
# runner's transcripts leave them out as they leave out TRANSPORT_HEADERS.
FETCH_HEADERS = frozenset({("accept-language", "*"), ("sec-fetch-mode", "cors")})

CALL_ARGUMENT_NAMES = ("call_id", "caller", "callee", "messages", "tools", "agent")

CANCEL_PROMPT_S = 1.0  # a cancelled iterator must end this soon after the cancel fires
CLOSE_WAIT_S = 2.0  # how long the runner waits for the server to see a close / an end


# -- the shared environment of a run ---------------------------------------------------------------


@dataclass(frozen=True)
class Harness:
    """What both runners are told: where the server is and how to normalise names."""

    origin: str  # http://127.0.0.1:PORT of the mock server (no path)
    closed_origin: str  # http://127.0.0.1:PORT where nothing listens
    stalled_origin: str  # http://127.0.0.1:PORT where a connect never completes
    scrub_env: tuple[str, ...]  # env vars removed around every construction
    option_names: tuple[str, ...]  # snake_case names whose camelCase spelling may be in messages
    version: str

    def payload(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "closed_origin": self.closed_origin,
            "stalled_origin": self.stalled_origin,
            "scrub_env": list(self.scrub_env),
            "option_names": list(self.option_names),
        }


def _load_yaml(path: Path) -> Any:
    import yaml  # the dev environment's PyYAML; the spec is YAML

    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def spec_facts() -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(provider env var names, option names, version) from spec/."""
    constants = _load_yaml(ROOT / "spec" / "constants.yaml")["constants"]
    env_names = tuple(
        sorted({str(c["value"]) for c in constants if str(c["name"]).endswith("_ENV")})
    )
    options = [str(o["name"]) for o in _load_yaml(ROOT / "spec" / "options.yaml")["options"]]
    version = str(_load_yaml(ROOT / "spec" / "package.yaml")["version"])
    return env_names, tuple(options) + CALL_ARGUMENT_NAMES, version


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_stalled: list[socket.socket] = []  # the listener and its fillers, open until the process ends


def stalled_port() -> int:
    """A loopback port where a TCP connect hangs: a listener whose accept queue is full.

    The listener never accepts; once its backlog is filled, the kernel drops further SYNs, so a
    client's connect waits until its own timeout. Made once per process.
    """
    if not _stalled:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        _stalled.append(listener)
        port = int(listener.getsockname()[1])
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            _stalled.append(filler)
        time.sleep(0.05)  # let the fillers' handshakes fill the queue
    return int(_stalled[0].getsockname()[1])


def make_harness(origin: str) -> Harness:
    env_names, option_names, version = spec_facts()
    return Harness(
        origin=origin,
        closed_origin=f"http://127.0.0.1:{closed_port()}",
        stalled_origin=f"http://127.0.0.1:{stalled_port()}",
        scrub_env=env_names,
        option_names=option_names,
        version=version,
    )


# -- cases -----------------------------------------------------------------------------------------


def load_schema() -> dict[str, Any]:
    with SCHEMA_PATH.open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


def validate_case(case: Mapping[str, Any], path: Path | None = None) -> None:
    """Raise ValueError when a case breaks the schema, its id is not its file name, or the mock
    server rejects its script."""
    import jsonschema

    from brainline.testing import compile_script

    where = path.name if path else case.get("id", "?")
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(case), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]]
        raise ValueError(f"{where} does not match case.schema.json:\n" + "\n".join(lines))
    if path is not None and path.stem != case["id"]:
        raise ValueError(f"{where}: id {case['id']!r} differs from the file name")
    compile_script({"responses": case["server"]})
    for endpoint in case.get("fallback", []):
        if "server" in endpoint:
            compile_script({"responses": endpoint["server"]})


def load_cases(directory: Path = CASES_DIR, validate: bool = True) -> list[dict[str, Any]]:
    cases = []
    for path in sorted(directory.glob("*.json")):
        with path.open(encoding="utf-8") as handle:
            case = json.load(handle)
        if validate:
            validate_case(case, path)
        cases.append(case)
    return cases


def route_prefix(runner: str, case_id: str) -> str:
    return f"/{runner}/{case_id}"


def endpoint_prefix(runner: str, case_id: str, index: int) -> str:
    """A FallbackLLM case's endpoint `index`: its own route under the case's."""
    return f"{route_prefix(runner, case_id)}/e{index}"


def case_routes(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The mock server routes for all cases and both runners (and each FallbackLLM endpoint)."""
    routes = {}
    for case in cases:
        for runner in RUNNERS:
            routes[f"{route_prefix(runner, case['id'])}/"] = case["server"]
            for index, endpoint in enumerate(case.get("fallback", [])):
                if "server" in endpoint:
                    routes[f"{endpoint_prefix(runner, case['id'], index)}/"] = endpoint["server"]
    return routes


# -- named factories (the same names and results in runner_ts.mjs) --------------------------------


def _factory_upper_call_id(ctx: Any) -> str | None:
    return ctx.call_id.upper() if ctx.call_id else None


def _factory_context(ctx: Any) -> str:
    return "|".join(v if v else "-" for v in (ctx.call_id, ctx.callee, ctx.caller_hash))


def _factory_caller_hash_short(ctx: Any) -> str | None:
    return f"h-{ctx.caller_hash[:8]}" if ctx.caller_hash else None


FACTORIES: dict[str, Callable[[Any], str | None]] = {
    "upper_call_id": _factory_upper_call_id,
    "context": _factory_context,
    "caller_hash_short": _factory_caller_hash_short,
    "none": lambda ctx: None,
    "empty": lambda ctx: "",
    "crlf": lambda ctx: "bad\r\nkey",
}


_DEFAULT = object()


def resolve_option(value: Any, base_url: str, harness: Harness) -> Any:
    if isinstance(value, Mapping) and set(value) == {"$factory"}:
        return FACTORIES[value["$factory"]]
    if isinstance(value, Mapping) and set(value) == {"$url"}:
        kind = value["$url"]
        if kind == "default":
            return _DEFAULT
        return {
            "mock": base_url,
            "mock_slash": base_url + "/",
            "closed": harness.closed_origin + "/v1",
            "stalled": harness.stalled_origin + "/v1",
        }[kind]
    return value


def build_options(
    case: Mapping[str, Any], harness: Harness, runner: str, prefix: str | None = None
) -> dict[str, Any]:
    """The options of `case` (or of one FallbackLLM endpoint, on its route `prefix`)."""
    base_url = harness.origin + (prefix or route_prefix(runner, case["id"])) + "/v1"
    options: dict[str, Any] = {}
    if "base_url" not in case["options"]:
        options["base_url"] = base_url
    for name, value in case["options"].items():
        resolved = resolve_option(value, base_url, harness)
        if resolved is not _DEFAULT:
            options[name] = resolved
    return options


@contextmanager
def case_env(case: Mapping[str, Any], harness: Harness) -> Iterator[None]:
    """Remove the provider env vars, apply the case's env, restore everything after."""
    env = case.get("env", {})
    names = set(harness.scrub_env) | set(env)
    saved = {name: os.environ.get(name) for name in names}
    try:
        for name in harness.scrub_env:
            os.environ.pop(name, None)
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- running one case ------------------------------------------------------------------------------


def error_info(exc: BaseException) -> dict[str, Any]:
    import brainline

    info: dict[str, Any] = {
        "class": type(exc).__name__,
        "code": getattr(exc, "code", None),
        "message": str(exc),
    }
    if isinstance(exc, brainline.APIStatusError):
        info["status"] = exc.status
        info["retry_after"] = exc.retry_after
        info["body"] = exc.body
        info["request_id"] = exc.request_id
    if isinstance(exc, brainline.StreamError):
        info["partial_text"] = exc.partial_text
        info["request_id"] = exc.request_id
    if isinstance(exc, brainline.AllEndpointsFailedError):
        info["errors"] = [error.code for error in exc.errors]
    return info


def turn_info(turn: Any) -> dict[str, Any]:
    usage = turn.usage
    return {
        "text": turn.text,
        "reasoning": turn.reasoning,
        "tool_calls": [
            {"index": c.index, "id": c.id, "name": c.name, "arguments": c.arguments}
            for c in turn.tool_calls
        ],
        "usage": None
        if usage is None
        else {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
        },
        "finish_reason": turn.finish_reason,
    }


class _Records:
    """The mock server's records for one route, read over its control endpoint."""

    def __init__(self, client: httpx.AsyncClient, origin: str, prefix: str) -> None:
        self.client = client
        self.url = f"{origin}/__mock/requests"
        self.prefix = prefix + "/"

    async def snapshot(self) -> dict[str, Any]:
        response = await self.client.get(self.url, params={"prefix": self.prefix})
        snapshot: dict[str, Any] = response.json()
        return snapshot

    async def fetch(self) -> list[dict[str, Any]]:
        requests: list[dict[str, Any]] = (await self.snapshot())["requests"]
        return requests

    async def open_connections(self) -> int:
        """Connections that carried this route's requests and are still open."""
        snapshot = await self.snapshot()
        used = {r["connection"] for r in snapshot["requests"]}
        return sum(1 for c in snapshot["connections"] if c["id"] in used and c["closed_at"] is None)

    async def saw_close(self, seen: int) -> bool | None:
        """Whether the client closed the last new request's connection before its response ended
        (None when the turn sent nothing). Waits for the server to settle the request."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        while True:
            requests = await self.fetch()
            if len(requests) <= seen:
                return None
            last = requests[-1]
            if last["client_closed"] or last["completed"] or last["dropped"]:
                return bool(last["client_closed"])
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)

    async def closes(self, seen: int) -> list[bool]:
        """For each new request, in arrival order: whether the client closed its connection
        before the response ended (FallbackLLM cases: the losers' closes). Waits for each to
        settle."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        while True:
            requests = (await self.fetch())[seen:]
            settled = [r["client_closed"] or r["completed"] or r["dropped"] for r in requests]
            if all(settled) or time.monotonic() >= deadline:
                return [bool(r["client_closed"]) for r in requests]
            await asyncio.sleep(0.01)


async def _run_call(
    llm: Any,
    call: Mapping[str, Any],
    records: _Records,
    closes: bool = False,
    sink: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    if "sleep_ms" in call:
        await asyncio.sleep(call["sleep_ms"] / 1000)
    seen = len(await records.fetch())
    delivered = 0 if sink is None else len(sink)
    method = call.get("method", "stream")
    messages = call["messages"]
    tools = call.get("tools")
    kwargs = {name: call[name] for name in ("call_id", "caller", "callee") if name in call}
    cancel_spec = call.get("cancel")
    result: dict[str, Any] = {"events": [], "error": None}
    cancel_event = asyncio.Event()
    fired_at: list[float] = []

    def fire() -> None:
        if not cancel_event.is_set():
            cancel_event.set()
            fired_at.append(time.monotonic())

    timer = None
    started = time.monotonic()
    if cancel_spec is not None:
        kwargs["cancel_event"] = cancel_event
        if cancel_spec.get("before"):
            fire()
        elif "after_ms" in cancel_spec:
            timer = asyncio.get_running_loop().call_later(cancel_spec["after_ms"] / 1000, fire)
    try:
        if method == "warmup":
            await llm.warmup()
        elif method == "complete":
            result["turn"] = turn_info(await llm.complete(messages, tools, **kwargs))
        else:
            async for event in llm.stream(messages, tools, **kwargs):
                result["events"].append(dict(event))
                after = (cancel_spec or {}).get("after_events")
                if after is not None and len(result["events"]) >= after:
                    fire()
    except Exception as exc:
        result["error"] = error_info(exc)
    ended = time.monotonic()
    if "within_ms" in call:
        result["in_time"] = (ended - started) * 1000 <= call["within_ms"]
    if timer is not None:
        timer.cancel()
    if cancel_spec is not None:
        result["cancel"] = {
            "fired": bool(fired_at),
            "prompt": bool(fired_at) and ended - fired_at[0] <= CANCEL_PROMPT_S,
        }
    result["server_saw_close"] = await records.saw_close(seen)
    if closes:
        result["closed"] = await records.closes(seen)
    if sink is not None:
        result["metrics"] = [dict(record) for record in sink[delivered:]]
    return result


async def run_case_raw(case: Mapping[str, Any], harness: Harness) -> dict[str, Any]:
    """Run one case; the raw record (requests as the server recorded them, un-normalised)."""
    import brainline

    prefix = route_prefix("py", case["id"])
    raw: dict[str, Any] = {"construct_error": None, "turns": []}
    sink: list[dict[str, Any]] | None = [] if case.get("collect_metrics") else None
    async with httpx.AsyncClient(timeout=10) as control:
        records = _Records(control, harness.origin, prefix)
        endpoints = case.get("fallback")
        cls = getattr(brainline, PROVIDER_CLASSES.get(case["provider"], "FallbackLLM"))
        try:
            with case_env(case, harness):
                if endpoints is None:
                    options = build_options(case, harness, "py")
                    if sink is not None:
                        options["on_metrics"] = sink.append
                    llm = cls(**options)
                else:  # a FallbackLLM over endpoints, each on its own route
                    llms = [
                        getattr(brainline, PROVIDER_CLASSES[e["provider"]])(
                            **build_options(e, harness, "py", endpoint_prefix("py", case["id"], i))
                        )
                        for i, e in enumerate(endpoints)
                    ]
                    llm = cls(llms, **case["options"])
        except Exception as exc:
            raw["construct_error"] = error_info(exc)
            raw["requests"] = await records.fetch()
            return raw
        try:
            if "inspect_config" in case:
                raw["config"] = {
                    name: llm.provider_key if name == "provider_key" else getattr(llm.config, name)
                    for name in case["inspect_config"]
                }
            calls = case.get("calls") or ([case["call"]] if "call" in case else [])
            for call in calls:
                raw["turns"].append(
                    await _run_call(llm, call, records, endpoints is not None, sink)
                )
            if case.get("count_open_connections"):
                raw["open_connections"] = await records.open_connections()
        finally:
            await llm.aclose()
        raw["requests"] = await records.fetch()
    return raw


async def run_case(case: Mapping[str, Any], harness: Harness) -> dict[str, Any]:
    """Run one case through the Python API; its normalised transcript."""
    limit = float(case.get("timeout_s", 10))
    try:
        raw = await asyncio.wait_for(run_case_raw(case, harness), limit)
    except asyncio.TimeoutError:
        raw = {"runner_error": f"the case did not finish within {limit} s", "requests": []}
    return normalize(raw, case, "py", harness)


# -- normalising (both languages) ------------------------------------------------------------------


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _normalize_text(text: str, runner: str, case_id: str, harness: Harness) -> str:
    text = text.replace(harness.origin + route_prefix(runner, case_id), "{server}")
    text = text.replace(harness.closed_origin, "{closed}")
    text = text.replace(harness.stalled_origin, "{stalled}")
    if runner != "py":  # the language's own spellings (spec/errors.yaml): names, the null word
        for name in sorted(harness.option_names, key=len, reverse=True):
            spelled = camel(name)
            if spelled != name:
                text = re.sub(rf"\b{re.escape(spelled)}\b", name, text)
        text = re.sub(r"\bundefined\b", "None", text)
    return text


def _normalize_error(
    error: Mapping[str, Any] | None, runner: str, case_id: str, harness: Harness
) -> dict[str, Any] | None:
    if error is None:
        return None
    out = dict(error)
    if isinstance(out.get("message"), str):
        out["message"] = _normalize_text(out["message"], runner, case_id, harness)
    if isinstance(out.get("body"), str):
        out["body_length"] = len(out["body"].encode("utf-8"))
    return out


def normalize_request(
    record: Mapping[str, Any], prefix: str, compare_raw: bool, runner: str = "py"
) -> dict[str, Any]:
    path = str(record["path"])
    if path.startswith(prefix + "/"):
        path = path[len(prefix) :]
    headers: dict[str, Any] = {}
    for name, value in record["headers"]:
        if name in TRANSPORT_HEADERS or (name, value) in LIBRARY_DEFAULT_HEADERS:
            continue
        if runner == "ts-fetch" and (name, value) in FETCH_HEADERS:
            continue
        headers[name] = value if name not in headers else f"{headers[name]}, {value}"
    out: dict[str, Any] = {"method": record["method"], "path": path}
    if record.get("query"):
        out["query"] = record["query"]
    out["headers"] = dict(sorted(headers.items()))
    body_text = str(record["body"])
    if body_text:
        try:
            out["body"] = json.loads(body_text)
        except ValueError:
            out["body"] = body_text
    if compare_raw:
        out["body_raw"] = body_text
    return out


def normalize_metrics(record: Mapping[str, Any]) -> dict[str, Any]:
    """A metrics record with every time (`*_ms`) as "ms" (never negative) or None: the keys and
    every value that is not a time stay, so both languages and the case can compare them."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key.endswith("_ms") and value is not None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            out[key] = "ms" if ok else f"bad time {value!r}"
        else:
            out[key] = value
    return out


def _normalize_events(events: list[Any], keep_metrics: bool) -> list[Any]:
    """The finish event's `metrics`: compared (normalised) when the case collects metrics, else
    dropped, so the other cases need not spell out a record of times."""
    out = []
    for event in events:
        if isinstance(event, dict) and event.get("type") == "finish" and "metrics" in event:
            event = dict(event)
            record = event.pop("metrics")
            if keep_metrics:
                event["metrics"] = normalize_metrics(record)
        out.append(event)
    return out


def normalize(
    raw: Mapping[str, Any], case: Mapping[str, Any], runner: str, harness: Harness
) -> dict[str, Any]:
    """A runner's raw record -> the transcript compared with the expectation and the other
    language: paths without the route prefix, contract headers only (sorted), messages with the
    server address as {server} and option names in snake_case."""
    case_id = case["id"]
    prefix = route_prefix(runner, case_id)
    requests = raw.get("requests", [])
    if isinstance(requests, str):  # the TS runner passes the server's JSON text through
        requests = json.loads(requests)["requests"]
    transcript: dict[str, Any] = {
        "requests": [
            normalize_request(r, prefix, bool(case.get("compare_raw_body")), runner)
            for r in requests
        ]
    }
    if raw.get("runner_error"):
        transcript["runner_error"] = raw["runner_error"]
    for key in ("config", "open_connections"):
        if key in raw:
            transcript[key] = raw[key]
    turns = [
        {
            **turn,
            "events": _normalize_events(turn.get("events", []), bool(case.get("collect_metrics"))),
            "error": _normalize_error(turn.get("error"), runner, case_id, harness),
            **(
                {"metrics": [normalize_metrics(m) for m in turn["metrics"]]}
                if "metrics" in turn
                else {}
            ),
        }
        for turn in raw.get("turns", [])
    ]
    construct_error = _normalize_error(raw.get("construct_error"), runner, case_id, harness)
    if "calls" in case:
        transcript["error"] = construct_error
        transcript["turns"] = turns
    elif turns:
        transcript.update(turns[0])
    else:
        transcript.update(events=[], error=construct_error, server_saw_close=None)
    return transcript


# -- comparing -------------------------------------------------------------------------------------


def canonical(value: Any) -> Any:
    """Integral floats as ints (1.0 == 1 in JSON), everything else as is; dict order kept."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Order-sensitive, readable JSON for comparisons and diffs."""
    return json.dumps(canonical(value), indent=2, ensure_ascii=False)


def _reduce_error(expected: Any, actual: Any) -> Any:
    """An error compared on the keys the expectation gives."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: actual.get(k, "<missing>") for k in expected}
    return actual


def _reduce_turn(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: actual.get(k, "<missing>") for k in expected}
    if "error" in expected:
        out["error"] = _reduce_error(expected["error"], actual.get("error"))
    return out


def expected_view(
    case: Mapping[str, Any], transcript: Mapping[str, Any], harness: Harness
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(expected, actual) reduced to what the expectation states, ready for an equality check.

    Requests: method, path, query and the full contract header set always; body / body_raw when
    the expectation gives them. Expected header values may use {version}. Errors are compared on
    the keys the expectation gives; other top-level keys as a whole.
    """
    expect = case["expect"]
    expected: dict[str, Any] = {"requests": []}
    actual: dict[str, Any] = {"requests": []}
    wanted_requests = expect.get("requests")
    if wanted_requests is None:  # {"each_request": ..., "request_count": N}
        wanted_requests = [expect["each_request"]] * expect["request_count"]
    for request in wanted_requests:
        item = {k: v for k, v in request.items() if k != "absent_headers"}
        item["headers"] = dict(
            sorted(
                (k, v.replace("{version}", harness.version)) for k, v in request["headers"].items()
            )
        )
        expected["requests"].append(item)
    for position, request in enumerate(transcript.get("requests", [])):
        wanted = wanted_requests[position] if position < len(wanted_requests) else None
        actual["requests"].append(
            {
                k: v
                for k, v in request.items()
                if wanted is None or k not in ("body", "body_raw") or k in wanted
            }
        )
    for key, value in expect.items():
        if key in ("requests", "each_request", "request_count"):
            continue
        expected[key] = value
        got = transcript.get(key, "<missing>")
        if key == "error":
            actual[key] = _reduce_error(value, got)
        elif key == "turns" and isinstance(got, list):
            actual[key] = [
                _reduce_turn(value[i], turn) if i < len(value) else turn
                for i, turn in enumerate(got)
            ]
        else:
            actual[key] = got
    if "runner_error" in transcript:
        actual["runner_error"] = transcript["runner_error"]
    return expected, actual


def absent_header_violations(case: Mapping[str, Any], transcript: Mapping[str, Any]) -> list[str]:
    problems = []
    expect = case["expect"]
    wanted = expect.get("requests")
    if wanted is None:
        wanted = [expect["each_request"]] * expect["request_count"]
    for position, request in enumerate(wanted):
        if position >= len(transcript.get("requests", [])):
            break
        sent = transcript["requests"][position]["headers"]
        for name in request.get("absent_headers", []):
            if name in sent:
                problems.append(
                    f"request {position}: header {name!r} must be absent, got {sent[name]!r}"
                )
    return problems


# -- standalone ------------------------------------------------------------------------------------


async def _main(case_ids: list[str]) -> int:
    from brainline.testing import MockServer

    cases = [c for c in load_cases() if not case_ids or c["id"] in case_ids]
    server = MockServer({"routes": case_routes(cases)})
    url = await server.start()
    try:
        harness = make_harness(url.removesuffix("/v1"))
        out = {case["id"]: await run_case(case, harness) for case in cases}
    finally:
        await server.stop()
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))
