"""The client request as the router sees it, and cheap facts derived from its body.

The router has no tokenizer, so selective disaggregation (`--min-prompt-tokens`) and the load
scorer use an estimate of **4 characters per token** (`CHARS_PER_TOKEN`), the usual rule of thumb
for English text with BPE tokenizers; it errs on the side of fewer tokens for code and non-Latin
scripts. The LMCache protocol replaces the estimate with the exact count from `/tokenize`, which
that protocol calls anyway.

The body is parsed once (`jsonbody.parse_object`), keeping the source text of each field so the
legs can be built without re-serialising a large prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from tandem.router.jsonbody import JsonBody
from tandem.router.pick import prefix_hash

CHARS_PER_TOKEN: Final = 4

COMPLETIONS_PATH: Final = "/v1/completions"
CHAT_PATH: Final = "/v1/chat/completions"

#: vLLM's default `max_tokens` for `/v1/completions` when the client sends none.
DEFAULT_COMPLETION_MAX_TOKENS: Final = 16


class Route(StrEnum):
    """`route` label of `tandem_router_requests_total`."""

    DISAGGREGATED = "disaggregated"
    DECODE_ONLY = "decode_only"
    FALLBACK = "fallback"


@dataclass(eq=False)
class ClientRequest:
    """One client call being routed."""

    path: str
    parsed: JsonBody
    raw: bytes
    request_id: str
    headers: Mapping[str, str]
    received_at: float
    route: Route = Route.DISAGGREGATED
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def body(self) -> dict[str, Any]:
        """The parsed request body."""
        return self.parsed.values

    @property
    def is_chat(self) -> bool:
        """True for `/v1/chat/completions`."""
        return self.path == CHAT_PATH

    @property
    def stream(self) -> bool:
        """Whether the client asked for SSE."""
        return bool(self.body.get("stream"))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def prompt_text(body: Mapping[str, Any], *, is_chat: bool) -> str | None:
    """The prompt as one string (chat: roles and contents in order); None if not text."""
    if is_chat:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        return "".join(
            f"{m.get('role', '')}:{_content_text(m.get('content'))}\n"
            for m in messages
            if isinstance(m, dict)
        )
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    return prompt if isinstance(prompt, str) else None


def prompt_token_ids(body: Mapping[str, Any]) -> list[int] | None:
    """A completions prompt that is already one list of token ids."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    return None


def estimate_prompt_tokens(body: Mapping[str, Any], *, is_chat: bool) -> int | None:
    """Estimated prompt tokens, or None when the body is not one prompt (a batch, or missing).

    Batches of prompts are never disaggregated: both hand-off protocols carry one request's KV.
    """
    ids = prompt_token_ids(body) if not is_chat else None
    if ids is not None:
        return len(ids)
    text = prompt_text(body, is_chat=is_chat)
    if text is None:
        return None
    return max(1, len(text) // CHARS_PER_TOKEN)


def request_prefix_hash(body: Mapping[str, Any], *, is_chat: bool) -> str | None:
    """The prefix-affinity key of the request (see `pick.prefix_hash`)."""
    text = prompt_text(body, is_chat=is_chat)
    if text is None:
        ids = prompt_token_ids(body)
        if ids is None:
            return None
        text = ",".join(map(str, ids[:128]))
    return prefix_hash(text)
