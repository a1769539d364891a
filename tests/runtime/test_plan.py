from __future__ import annotations

from steerguard.runtime.plan import Intervention, SteeringPlan


def test_plan_hash_is_computed_once_and_follows_updates() -> None:
    iv = Intervention(vector="calm", layers=(3, 4), strength=0.1)
    plan = SteeringPlan(interventions=(iv,))
    first = plan.content_hash()
    assert plan.content_hash() is first  # kept on the plan
    assert plan == SteeringPlan(interventions=(iv,))  # equality still compares fields only
    stronger = (iv.model_copy(update={"strength": 0.2}),)
    copy = plan.model_copy(update={"interventions": stronger})
    assert copy.content_hash() != first
    assert copy.content_hash() == SteeringPlan(interventions=stronger).content_hash()
