"""The client's answer in the LMCache protocol: the prefiller's first token, then the decoder's.

In LMCache's PD mode the prefiller generates the first token and the decoder continues from
`prompt + [first token]`, so the router assembles the answer: a synthesized first event (or the
first token prepended to a non-streamed answer), the decoder's events with the request's own id,
usage corrected for the token the decoder saw as prompt, and for chat clients everything
reshaped into chat format. Pure functions and a frozen dataclass; no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tandem.router import chatshape, sse


@dataclass(frozen=True, slots=True)
class FirstToken:
    """What the prefill answer says about the first generated token."""

    token: int
    text: str | None
    finish_reason: str | None


def parse_first_token(answer: dict[str, Any]) -> FirstToken:
    """Read `kv_transfer_params.first_tok` (and the text, if any); ValueError if missing."""
    params = answer.get("kv_transfer_params")
    token = params.get("first_tok") if isinstance(params, dict) else None
    if not isinstance(token, int):
        raise ValueError("prefill answer has no kv_transfer_params.first_tok")
    choices = answer.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    text = choice.get("text")
    return FirstToken(
        token=token,
        text=text if isinstance(text, str) else None,
        finish_reason=choice.get("finish_reason"),
    )


@dataclass(frozen=True, slots=True)
class Stitcher:
    """Builds the client's answer: the first token, then the decoder's output, in its format."""

    completion_id: str
    model: str
    created: int
    first_text: str
    prompt_tokens: int
    is_chat: bool

    def _completion_chunk(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                    "stop_reason": None,
                }
            ],
            "usage": None,
        }

    def _shape(self, chunk: dict[str, Any], *, head: bool = False) -> dict[str, Any]:
        return chatshape.chunk_to_chat(chunk, with_role=head) if self.is_chat else chunk

    def head_event(self) -> bytes:
        """The synthesized first event carrying the first token."""
        return sse.encode_event(
            self._shape(self._completion_chunk(self.first_text, None), head=True)
        )

    def fix_usage(self, usage: Any) -> Any:
        """The decoder counted the first token as prompt; give it back to the completion."""
        if not isinstance(usage, dict):
            return usage
        out = dict(usage)
        out["prompt_tokens"] = self.prompt_tokens
        if isinstance(usage.get("completion_tokens"), int):
            out["completion_tokens"] = usage["completion_tokens"] + 1
        return out

    def event(self, payload: bytes) -> bytes:
        """One decoder SSE payload as the client's event; ValueError if it is not JSON."""
        chunk = json.loads(payload)
        if not isinstance(chunk, dict):
            raise ValueError("decoder event is not a JSON object")
        if "error" in chunk:  # vLLM's mid-stream error event: pass it on as it is
            return sse.encode_event(chunk)
        chunk["id"] = self.completion_id
        if chunk.get("usage") is not None:
            chunk["usage"] = self.fix_usage(chunk["usage"])
        return sse.encode_event(self._shape(chunk))

    def whole(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The decoder's non-streamed answer with the first token prepended."""
        out = dict(answer)
        out["id"] = self.completion_id
        choices = [dict(c) for c in answer.get("choices") or [] if isinstance(c, dict)]
        if choices:
            choices[0]["text"] = self.first_text + str(choices[0].get("text") or "")
        out["choices"] = choices
        out["usage"] = self.fix_usage(answer.get("usage"))
        return chatshape.completion_to_chat(out) if self.is_chat else out

    def first_only(self, finish_reason: str | None) -> dict[str, Any]:
        """A non-streamed answer made of the first token alone (max_tokens 1, or EOS)."""
        answer = self._completion_chunk(self.first_text, finish_reason)
        answer["usage"] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": 1,
            "total_tokens": self.prompt_tokens + 1,
        }
        return chatshape.completion_to_chat(answer) if self.is_chat else answer

    def first_only_events(self, finish_reason: str | None) -> bytes:
        """The streamed equivalent of `first_only`."""
        final = self._shape(self._completion_chunk("", finish_reason))
        return self.head_event() + sse.encode_event(final) + sse.DONE_EVENT
