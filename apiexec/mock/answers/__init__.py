"""What each model endpoint of the mock server answers, by provider and endpoint.

Example:
    >>> sorted(MODEL_ROUTES)[:2]
    ['/v1/chat/completions', '/v1/completions']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from apiexec.mock.answers.anthropic import messages_answer
from apiexec.mock.answers.chat import chat_answer
from apiexec.mock.answers.common import Answer, BadRequest, parse_json_object
from apiexec.mock.answers.openai_misc import completions_answer, embeddings_answer
from apiexec.mock.answers.responses import responses_answer

__all__ = ["MODEL_ROUTES", "Answer", "BadRequest", "ModelRoute", "parse_json_object"]


@dataclass(frozen=True)
class ModelRoute:
    """A model endpoint: how it answers, and in which provider's dialect."""

    build: Callable[[dict[str, Any]], Answer]
    anthropic: bool = False


MODEL_ROUTES: Final[Mapping[str, ModelRoute]] = {
    "/v1/chat/completions": ModelRoute(chat_answer),
    "/v1/completions": ModelRoute(completions_answer),
    "/v1/embeddings": ModelRoute(embeddings_answer),
    "/v1/messages": ModelRoute(messages_answer, anthropic=True),
    "/v1/responses": ModelRoute(responses_answer),
}
