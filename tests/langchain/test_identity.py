"""Who the user is comes from the runnable config only, and stays out of traces."""

from __future__ import annotations

from steerguard.chat.call import RequestIdentity
from steerguard.langchain.chat_model import (
    IDENTITY_KWARG,
    SteeredChatModel,
    identity_from_config,
)


def test_identity_comes_from_config_only() -> None:
    ident = identity_from_config({"configurable": {
        "steerguard_profile": {"user_id": "u1", "age_band": "minor"},
        "thread_id": "t1", "request_context": {"channel": "sms"}}})
    assert ident.profile is not None and ident.profile.age_band == "minor"
    assert ident.session_id == "t1" and ident.context is not None
    assert "u1" not in repr(ident)


def test_identity_stays_out_of_invocation_params() -> None:
    model = SteeredChatModel(audit=False)
    params = model._get_invocation_params(stop=None, **{IDENTITY_KWARG: RequestIdentity()})
    assert IDENTITY_KWARG not in params
