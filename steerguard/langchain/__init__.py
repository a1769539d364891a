"""LangChain integration: a steered, audited local chat model for agents."""

from steerguard.chat.call import RequestIdentity
from steerguard.langchain.chat_model import (
    CONTEXT_KEY,
    PROFILE_KEY,
    SESSION_KEY,
    SteeredChatModel,
    identity_from_config,
)

__all__ = [
    "CONTEXT_KEY",
    "PROFILE_KEY",
    "SESSION_KEY",
    "RequestIdentity",
    "SteeredChatModel",
    "identity_from_config",
]
