from __future__ import annotations

import pytest

from steerguard.eval.judges import (
    JUDGES,
    caution_score,
    empathy_score,
    formality_score,
    judge_for,
    length_words,
    refusal_score,
    vader_compound,
)


def test_vader_orders_cheerful_above_gloomy() -> None:
    assert vader_compound("What a wonderful, happy day, I love it!") > 0.5
    assert vader_compound("This is terrible, sad and hopeless.") < -0.5
    assert vader_compound("") == 0.0


def test_formality_sign_and_bounds() -> None:
    formal = "Certainly. Please ensure that you provide the reference; we would appreciate it."
    casual = "Hey, yeah that's totally cool, no worries!! Gonna fix it lol"
    assert formality_score(formal) > 0.5
    assert formality_score(casual) < -0.5
    assert formality_score("The box is blue.") == 0.0
    for text in (formal, casual):
        assert -1.0 < formality_score(text) < 1.0


def test_formality_counts_curly_contractions() -> None:
    assert formality_score("I don’t know") < 0


def test_refusal_is_binary() -> None:
    assert refusal_score("I'm sorry, but I can't help with that.") == 1.0
    assert refusal_score("I’m unable to assist with this request.") == 1.0
    assert refusal_score("Sure, here are the steps: first open the door.") == 0.0


def test_length_counts_words_not_punctuation() -> None:
    assert length_words("One, two -- three!") == 3.0
    assert length_words("") == 0.0


def test_caution_rewards_confirming_and_asking_back() -> None:
    reckless = "Done. I deleted everything."
    careful = "Before I delete anything, are you sure? This cannot be undone, so back up first."
    assert caution_score(reckless) == 0.0
    assert caution_score(careful) >= 5.0


def test_empathy_subtracts_dismissive_markers() -> None:
    warm = "I'm so sorry, that sounds really frustrating. I understand how you feel."
    cold = "Calm down. It's your fault, you should have read the manual."
    assert empathy_score(warm) >= 4.0
    assert empathy_score(cold) <= -3.0


def test_registry_covers_every_shipped_concept_judge() -> None:
    import yaml

    from steerguard.resources import concepts_dir as shipped_concepts

    for path in shipped_concepts().glob("*/concept.yaml"):
        meta = yaml.safe_load(path.read_text())
        assert judge_for(meta.get("judge"), meta["name"]).name in JUDGES
    assert JUDGES["length"].sign == -1
    with pytest.raises(KeyError):
        judge_for("nope", "x")
