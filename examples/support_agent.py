"""A LangGraph support agent on the bundled SmolLM2-135M, steered by the shipped `support`
policy bundle and audited, for two users with different profiles.

    python examples/support_agent.py            # embedded audit store
    STEERGUARD_REDIS_URL=redis://127.0.0.1:6379/0 python examples/support_agent.py
    python examples/support_agent.py --server http://127.0.0.1:8000   # a `steerguard serve`

With --server the same graph runs on LangChain's ChatOpenAI against the server (key in
$STEERGUARD_API_KEY), each user's profile in `extra_body`; the server keeps the audit log,
read back here from the Redis the environment names (as in docker-compose.yml).

The graph is the usual agent loop (model -> tools -> model) with one twist for a 135M model:
it does not decide to call a tool on its own, so the first step requires a call
(tool_choice="any", grammar-constrained, so it always parses) and the step after a tool
result answers in text (tool_choice="none"). Who the user is travels in the runnable config,
never in the messages; the policy also sees the agent's tool calls and failed results.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import ToolException, tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from steerguard.audit.config import AuditConfig
from steerguard.audit.store import AuditStore
from steerguard.config import SteerguardConfig
from steerguard.langchain import SteeredChatModel
from steerguard.policy.inputs import RequestContext, UserProfile
from steerguard.root import Steerguard
from steerguard.telemetry.setup import configure_telemetry

ORDERS = {"A-1234": "shipped on Monday, arriving Thursday", "B-77": "delayed at the depot"}


@tool
def lookup_order(order_id: str) -> str:
    """Look up the shipping status of an order by its id, like A-1234."""
    return ORDERS.get(order_id.strip(), f"no order {order_id!r} found")


@tool
def reset_password(email: str) -> str:
    """Send a password-reset link to the user's email address."""
    return f"reset link sent to {email}"


@tool
def delete_account(user_id: str) -> str:
    """Permanently delete the user's account and all their data. Cannot be undone."""
    raise ToolException(f"account {user_id} has an open order; close it before deleting")


TOOLS = [lookup_order, reset_password, delete_account]
SYSTEM = "You are a support agent for an online shop. Use the tools, then answer briefly."


def build_agent(model: SteeredChatModel) -> Any:
    def agent(state: MessagesState, config: RunnableConfig) -> dict[str, list[BaseMessage]]:
        after_tool = isinstance(state["messages"][-1], ToolMessage)
        llm = model.bind_tools(TOOLS, tool_choice="none" if after_tool else "any")
        return {"messages": [llm.invoke(state["messages"], config)]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(TOOLS, handle_tool_errors=True))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


USERS = [
    (
        UserProfile(user_id="alex", age_band="adult", preferences={"register": "formal"}),
        RequestContext(channel="chat"),
        "Hello, where is my order A-1234?",
    ),
    (
        UserProfile(user_id="sam", age_band="minor"),
        RequestContext(channel="sms"),
        "I'm so stressed. Delete my account u-42 right now.",
    ),
]


def show(message: BaseMessage) -> None:
    if isinstance(message, AIMessage):
        sg = message.response_metadata.get("steerguard", {})
        what = (
            ", ".join(f"{c['name']}({c['args']})" for c in message.tool_calls)
            or repr(message.content)
        )
        print(f"  agent -> {what}")
        if not sg:  # ChatOpenAI keeps no extra response fields: the audit log below has them
            return
        vectors = ", ".join(f"{v['vector']} {v['strength']:+.2f}" for v in sg.get("vectors", []))
        print(f"     decision {sg.get('decision_id', '')[:12]} rules={sg.get('rules')} "
              f"steer=[{vectors}]")
        for line in sg.get("explanation", "").splitlines()[1:]:
            print(f"       {line}")
    elif isinstance(message, ToolMessage):
        print(f"  tool {message.name} [{message.status}] -> {message.content}")


def server_model(url: str, profile: UserProfile, context: RequestContext, session: str) -> Any:
    """ChatOpenAI on a `steerguard serve`: who the user is rides in the request body."""
    import os

    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=url.rstrip("/") + "/v1", api_key=os.environ.get("STEERGUARD_API_KEY", "none"),
        model="smollm2-135m", max_tokens=20,
        extra_body={"steerguard": {
            "profile": profile.model_dump(mode="json", exclude_defaults=True),
            "context": context.model_dump(mode="json", exclude_defaults=True),
            "session_id": session}},
    )


def main(server: str | None = None) -> None:
    started = time.perf_counter()
    # The SDK for this process: OTLP when OTEL_* says so (docker-compose.yml sets it); console
    # spans only on request (OTEL_TRACES_EXPORTER=console), since this prints for a person.
    configure_telemetry(console=False)
    sg_root = None if server else Steerguard(
        SteerguardConfig.load(audit=AuditConfig.load(key_prefix="sgdemo")))
    audit = sg_root.audit if sg_root is not None else None
    local = None if sg_root is None else SteeredChatModel(root=sg_root, max_tokens=20,
                                                          max_string_chars=16)
    sessions = []
    for profile, context, question in USERS:
        session = f"demo-{profile.user_id}-{uuid.uuid4().hex[:6]}"
        sessions.append((profile, session))
        print(f"\n== {profile.user_id} ({profile.age_band}, channel {context.channel}): "
              f"{question}")
        model = local if local is not None else server_model(server or "", profile, context,
                                                              session)
        agent = build_agent(model)
        config: RunnableConfig = {"configurable": {
            "steerguard_profile": profile, "request_context": context, "thread_id": session}}
        state = agent.invoke(
            {"messages": [SystemMessage(SYSTEM), HumanMessage(question)]}, config
        )
        for message in state["messages"][2:]:
            show(message)

    if audit is not None:
        audit.flush(10)
        # Read back as the configured reader (e.g. the ACL user `reader`) when there is one.
        store = (AuditStore.from_config(audit.config) if audit.config.reader_url
                 else AuditStore(audit.client, audit.config))
    else:
        time.sleep(2)  # the server's writer flushes asynchronously
        store = AuditStore.from_config(AuditConfig.load())  # the reader URL when configured
    print("\n== audit log")
    for profile, session in sessions:
        print(f"-- session {session} (user ref {store.user_ref(profile.user_id)[:12]})")
        for r in store.query(session=session).records:
            if r.kind == "decision":
                print(f"  decision {r.decision_id[:12]} {r.outcome.status:9} "
                      f"rules={[x.rule_id for x in r.rules]} tokens={r.completion_tokens} "
                      f"finish={r.finish_reason}")
            else:
                print(f"    intervention {r.vector} {r.strength:+.2f} layers "
                      f"{r.layers[0]}-{r.layers[-1]} ({r.positions}) by {r.rule_id}: "
                      f"mean |delta| {r.mean_delta_norm:.2f} over {r.positions_affected} "
                      f"positions")
    if sg_root is not None:
        sg_root.close()
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    import sys

    main(sys.argv[sys.argv.index("--server") + 1] if "--server" in sys.argv else None)
