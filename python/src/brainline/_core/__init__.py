"""The hand-written runtime: client, SSE decoding, chunk handling, errors and session keys.

typescript/src/core/ mirrors it module for module (docs/runtime.md is the contract).
"""
