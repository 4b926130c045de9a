"""The HTTP layer: endpoint configuration, the pooled session, retries, errors.

Never imports the execution, limits, llm, batch or mock layers: a running
call reports to its executor only through :mod:`apiexec.call_context`.

Example:
    >>> from apiexec.http import EndpointConfig
    >>> EndpointConfig(provider="x", endpoint="chat/completions",
    ...                base_url="http://127.0.0.1:8000/v1").full_url
    'http://127.0.0.1:8000/v1/chat/completions'
"""

from apiexec.http.config import EndpointConfig
from apiexec.http.credentials import Secret
from apiexec.http.endpoint import Endpoint

__all__ = ["Endpoint", "EndpointConfig", "Secret"]
