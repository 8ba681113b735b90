"""Reshape completion-format output (`text_completion`) into chat format (`chat.completion*`).

Needed only by the LMCache protocol: both of its legs call `/v1/completions` with token ids (the
chat template was applied by `/tokenize`), so a client that called `/v1/chat/completions` must get
its answer converted back. Pure functions over the JSON objects; tool calls and reasoning content
are not reconstructed (the decoder saw a plain completion request).
"""

from __future__ import annotations

from typing import Any

CHAT_COMPLETION = "chat.completion"
CHAT_CHUNK = "chat.completion.chunk"


def chat_id(completion_id: str) -> str:
    """vLLM's chat ids start with `chatcmpl-`; keep the suffix so logs still correlate."""
    return "chat" + completion_id if completion_id.startswith("cmpl-") else completion_id


def chunk_to_chat(chunk: dict[str, Any], *, with_role: bool = False) -> dict[str, Any]:
    """One streamed `text_completion` chunk as a `chat.completion.chunk`."""
    choices = []
    for choice in chunk.get("choices") or []:
        delta: dict[str, Any] = {"role": "assistant"} if with_role else {}
        text = choice.get("text")
        if text is not None:
            delta["content"] = text
        choices.append(
            {
                "index": choice.get("index", 0),
                "delta": delta,
                "logprobs": None,
                "finish_reason": choice.get("finish_reason"),
                **({"stop_reason": choice["stop_reason"]} if "stop_reason" in choice else {}),
            }
        )
    out: dict[str, Any] = {
        "id": chat_id(str(chunk.get("id", ""))),
        "object": CHAT_CHUNK,
        "created": chunk.get("created"),
        "model": chunk.get("model"),
        "choices": choices,
    }
    if chunk.get("usage") is not None:
        out["usage"] = chunk["usage"]
    return out


def completion_to_chat(resp: dict[str, Any]) -> dict[str, Any]:
    """A whole non-streamed `text_completion` as a `chat.completion`."""
    choices = [
        {
            "index": choice.get("index", 0),
            "message": {"role": "assistant", "content": choice.get("text", "")},
            "logprobs": None,
            "finish_reason": choice.get("finish_reason"),
            **({"stop_reason": choice["stop_reason"]} if "stop_reason" in choice else {}),
        }
        for choice in resp.get("choices") or []
    ]
    return {
        "id": chat_id(str(resp.get("id", ""))),
        "object": CHAT_COMPLETION,
        "created": resp.get("created"),
        "model": resp.get("model"),
        "choices": choices,
        "usage": resp.get("usage"),
    }
