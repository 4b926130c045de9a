"""The LLM layer: API calls as events, stream assembly, token estimates.

Example:
    >>> from apiexec.llm import APICalling
    >>> APICalling.event_type
    'api_calling'
"""

from apiexec.llm.api_calling import APICalling

__all__ = ["APICalling"]
