"""LangChain integration: a steered, audited local chat model for agents."""

from steerguard.langchain.chat_model import (
    CONTEXT_KEY,
    PROFILE_KEY,
    SESSION_KEY,
    RequestIdentity,
    SteeredChatModel,
    shared_engine,
)

__all__ = [
    "CONTEXT_KEY",
    "PROFILE_KEY",
    "SESSION_KEY",
    "RequestIdentity",
    "SteeredChatModel",
    "shared_engine",
]
