"""Unit tests of which requests must not be split into a prefill and a decode leg (`split.py`)."""

from __future__ import annotations

from typing import Any

import pytest

from tandem.router.split import any_protocol_reason, token_prompt_reason

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("body", "is_chat", "reason"),
    [
        ({"prompt": "x", "max_tokens": 1}, False, "max_tokens"),
        ({"prompt": "x", "max_tokens": 0}, False, "max_tokens"),
        ({"prompt": "x"}, False, None),  # vLLM's default is 16
        ({"messages": [], "max_completion_tokens": 1, "max_tokens": 9}, True, "max_tokens"),
        ({"messages": [], "max_tokens": 1}, True, "max_tokens"),
        ({"messages": []}, True, None),  # unbounded
        ({"prompt": "x", "max_tokens": 2}, False, None),
        ({"prompt": "x", "max_tokens": True}, False, None),  # not a number: the engine decides
        ({"prompt": "x", "n": 2}, False, "n"),
        ({"prompt": "x", "n": 1, "best_of": 3}, False, "n"),
        ({"prompt": "x", "prompt_logprobs": 0}, False, "prompt_logprobs"),
        ({"prompt": "x", "prompt_logprobs": None}, False, None),
    ],
)
def test_reasons_for_every_protocol(body: dict[str, Any], is_chat: bool, reason: str) -> None:
    assert any_protocol_reason(body, is_chat=is_chat) == reason


@pytest.mark.parametrize(
    ("body", "is_chat", "reason"),
    [
        ({"echo": True}, False, "echo"),
        ({"echo": False, "temperature": 0}, False, None),
        ({"echo": True, "messages": []}, True, None),  # chat's echo: the decoder gets the body
        # The decoder samples every token: these split fine now (review A9).
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, False, None),
        ({"structured_outputs": {"choice": ["a", "b"]}}, False, None),
        ({"tools": [{"type": "function"}], "tool_choice": "required"}, True, None),
        ({"logprobs": 2}, False, None),
        ({"logprobs": True, "top_logprobs": 3}, True, None),
        ({"stop": ["\n"]}, False, None),
    ],
)
def test_reasons_when_the_decode_leg_gets_token_ids(
    body: dict[str, Any], is_chat: bool, reason: str | None
) -> None:
    assert token_prompt_reason(body, is_chat=is_chat) == reason
