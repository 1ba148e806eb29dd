"""brainline: stream any OpenAI-compatible /chat/completions endpoint into a voice or agent pipeline.

The provider classes are generated from spec/ (see docs/reference/providers.md); the runtime that
streams, decodes and cancels is in brainline._core. This module only re-exports the public surface.
"""

from ._core.client import BaseLLM
from ._core.errors import (
    AllEndpointsFailedError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BrainlineError,
    ConfigError,
    StreamError,
)
from ._core.events import (
    Event,
    FinishEvent,
    ProgressEvent,
    ReasoningEvent,
    RouteEvent,
    RouteFailure,
    TextEvent,
    ToolCall,
    ToolCallEvent,
    Turn,
    Usage,
    UsageEvent,
    assemble_tool_calls,
)
from ._core.fallback import FallbackLLM
from ._core.session import SessionContext, hash_caller
from ._generated import registry as _registry
from ._generated.constants import USER_AGENT, VERSION
from ._generated.fallback import FallbackConfig
from ._generated.options import LLMConfig
from ._generated.registry import *  # noqa: F403  (every provider class of the spec)

__version__ = VERSION

__all__ = [
    "USER_AGENT",
    "VERSION",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AllEndpointsFailedError",
    "BaseLLM",
    "BrainlineError",
    "ConfigError",
    "Event",
    "FallbackConfig",
    "FallbackLLM",
    "FinishEvent",
    "LLMConfig",
    "ProgressEvent",
    "ReasoningEvent",
    "RouteEvent",
    "RouteFailure",
    "SessionContext",
    "StreamError",
    "TextEvent",
    "ToolCall",
    "ToolCallEvent",
    "Turn",
    "Usage",
    "UsageEvent",
    "__version__",
    "assemble_tool_calls",
    "hash_caller",
    *_registry.__all__,
]
