from __future__ import annotations

import hashlib

from steerguard.canonical import canonical
from steerguard.runtime.plan import Intervention, Positions, SteeringPlan


def test_plan_hash_follows_updates() -> None:
    iv = Intervention(vector="calm", layers=(3, 4), strength=0.1)
    plan = SteeringPlan(interventions=(iv,))
    first = plan.content_hash()
    assert plan.content_hash() == first
    assert plan == SteeringPlan(interventions=(iv,))
    stronger = (iv.model_copy(update={"strength": 0.2}),)
    copy = plan.model_copy(update={"interventions": stronger})
    assert copy.content_hash() != first
    assert copy.content_hash() == SteeringPlan(interventions=stronger).content_hash()


def test_plan_hash_is_the_hash_of_the_plans_canonical_json() -> None:
    """Values that compare equal but serialize apart (0.0 and -0.0) hash apart."""
    ivs = [Intervention(vector="calm", layers=(3, 4), strength=0.1),
           Intervention(vector="calm", layers=(3, 4), strength=0.0),
           Intervention(vector="calm", layers=(3, 4), strength=-0.0),
           Intervention(vector="calm", layers=(4, 3), strength=1e-05, op="clamp"),
           Intervention(vector="formal", vector_hash="ab" * 8, layers=(1,), strength=-2.5,
                        positions=Positions.parse("last_3"), source="rule-ü")]
    plans = [SteeringPlan(interventions=(a, b)) for a in ivs for b in ivs] + [SteeringPlan()]
    for plan in plans:
        expected = hashlib.sha256(canonical(plan.model_dump(mode="json"))).hexdigest()
        assert plan.content_hash() == expected
    zeros = {SteeringPlan(interventions=(iv,)).content_hash() for iv in ivs[1:3]}
    assert len(zeros) == 2
