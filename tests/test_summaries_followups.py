"""What each follow-up button asks for, and the custom_id template that survives restarts."""

from __future__ import annotations

import pytest

from cogs.summaries import FollowUpButton, followup_view
from core.followups import plan_followup
from core.errors import UserFacingError
from storage import SummaryRecord


def record(**changes) -> SummaryRecord:
    values = dict(guild_id=1, channel_id=2, requester_id=3, text="t", length="medium", style="bullets",
                  settings={"max_new_tokens": 160, "do_sample": False, "temperature": 0.7, "top_p": 0.9,
                            "top_k": 50, "repetition_penalty": 1.1, "seed": None})
    values.update(changes)
    return SummaryRecord(**values)


def test_shorter_and_longer_step_through_lengths() -> None:
    assert plan_followup("shorter", record(), 1).length == "short"
    assert plan_followup("longer", record(), 1).length == "long"
    assert plan_followup("longer", record(length="short"), 1).length == "medium"
    with pytest.raises(UserFacingError, match="shortest"):
        plan_followup("shorter", record(length="short"), 1)
    with pytest.raises(UserFacingError, match="longest"):
        plan_followup("longer", record(length="long"), 1)


def test_action_items_keeps_length() -> None:
    plan = plan_followup("actions", record(length="long"), 1)
    assert (plan.length, plan.style, plan.generation) == ("long", "action_items", None)


def test_regenerate_turns_sampling_on_with_the_given_seed() -> None:
    plan = plan_followup("regenerate", record(), 1234)
    assert plan.generation is not None
    assert plan.generation.sampling and plan.generation.seed == 1234
    assert plan.generation.max_new_tokens == 160  # what the summary was made with
    assert (plan.length, plan.style) == ("medium", "bullets")


def test_regenerate_without_stored_settings_uses_the_length_preset() -> None:
    plan = plan_followup("regenerate", record(length="short", settings={}), 7)
    assert plan.generation is not None and plan.generation.max_new_tokens == 72 and plan.generation.sampling


def test_custom_ids_carry_action_and_summary_id() -> None:
    view = followup_view(987654321)
    ids = [item.custom_id for item in view.children]
    assert ids == ["recap:shorter:987654321", "recap:longer:987654321", "recap:regenerate:987654321",
                   "recap:actions:987654321"]
    assert all(FollowUpButton.__discord_ui_compiled_template__.fullmatch(i) for i in ids)
    assert not FollowUpButton.__discord_ui_compiled_template__.fullmatch("recap:delete:1")
    assert view.timeout is None and view.is_persistent()
