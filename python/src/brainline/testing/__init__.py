"""Test helpers shipped with brainline: a scripted OpenAI-compatible server on 127.0.0.1.

>>> async with MockServer({"text": ["Hel", "lo"]}) as url:   # doctest: +SKIP
...     llm = brainline.OpenAICompatibleLLM(base_url=url, model="m")

The script format is documented in docs/testing.md. Standard library only.
"""

from .server import ConnectionRecord, MockServer, RecordedRequest, ScriptError, compile_script

__all__ = ["ConnectionRecord", "MockServer", "RecordedRequest", "ScriptError", "compile_script"]
