"""LLM providers: one contract (`base.Provider`), one module per backend.

`get_provider("openai:gpt-4o-mini", config)` is the way in; the backend modules (and their
SDKs, and llama.cpp) are imported only when a spec names them.
"""

from .base import (
    ChatRequest,
    ChatResponse,
    FunctionProvider,
    Message,
    Provider,
    ProviderError,
    ToolCall,
    ToolSpec,
    Usage,
    split_model,
)
from .registry import KNOWN_PROVIDERS, ProviderSettings, Resolution, get_provider, resolve

__all__ = [
    "KNOWN_PROVIDERS",
    "ChatRequest",
    "ChatResponse",
    "FunctionProvider",
    "Message",
    "Provider",
    "ProviderError",
    "ProviderSettings",
    "Resolution",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "get_provider",
    "resolve",
    "split_model",
]
