"""What a follow-up button under a summary asks for, and who may press it: decisions only.

The buttons themselves (discord UI) and the press's flow are in ``cogs/summaries.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import discord

from engine.generation import GenerationSettings, InvalidRequest
from engine.prompts import generation_for
from storage import SummaryRecord

from .errors import UserFacingError

LENGTH_ORDER = ("short", "medium", "long")


@dataclass(frozen=True)
class FollowUpPlan:
    length: str
    style: str
    generation: GenerationSettings | None  # None: the channel's settings


def plan_followup(action: str, record: SummaryRecord, seed: int) -> FollowUpPlan:
    """What a button asks for; raises ``UserFacingError`` when it cannot apply (already shortest)."""
    length = record.length if record.length in LENGTH_ORDER else "medium"
    index = LENGTH_ORDER.index(length)
    if action == "shorter":
        if index == 0:
            raise UserFacingError("This summary is already the shortest length. Try **Regenerate** for a different take.")
        return FollowUpPlan(LENGTH_ORDER[index - 1], record.style, None)
    if action == "longer":
        if index == len(LENGTH_ORDER) - 1:
            raise UserFacingError("This summary is already the longest length. Try **Regenerate** for a different take.")
        return FollowUpPlan(LENGTH_ORDER[index + 1], record.style, None)
    if action == "actions":
        return FollowUpPlan(length, "action_items", None)
    return FollowUpPlan(length, record.style, regenerate_settings(record, seed))


def regenerate_settings(record: SummaryRecord, seed: int) -> GenerationSettings:
    """Sampling on, a new seed; otherwise the settings the summary was made with."""
    base = GenerationSettings.from_dict(record.settings)
    if base is None:
        try:
            base = generation_for(record.length)
        except InvalidRequest:  # a length no longer offered
            base = generation_for("medium")
    return base.with_(sampling=True, seed=seed)


def may_press(member: discord.Member, record: SummaryRecord) -> bool:
    """The requester, or a server manager for a public summary (a private one is its requester's alone)."""
    if record.private:
        return member.id == record.requester_id
    return member.id == record.requester_id or member.guild_permissions.manage_guild
