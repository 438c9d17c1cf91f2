"""The summarize flow shared by /summarize, the context menu, and follow-up buttons.

``run_summary`` does everything after the options are parsed: checks, defer,
reading, generation with progress, the reply, and storing the summary. Other
cogs reuse the pieces: ``summarize_conversation`` (from already-read messages)
and ``send_summary`` (the reply), and attach buttons through ``view_factory``
(or ``bot.services.summary_views``, which cogs.summaries provides, for every summary).

A busy bot: members beyond what runs now wait in the executor's queue, their
"thinking" reply showing their place in line (``ProgressMessage``); the executor
refuses, with a retry hint, only when its queue is really full. The same
messages summarized the same way are summarized once: a recent stored summary
of exactly them is shown again (``reuse.py``), and concurrent requests for them
share one generation (``sharing.py``); each member still gets a reply and a
stored summary of their own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable

import discord

from engine.generation import GenerationSettings
from engine.prompts import generation_for
from engine.tunables import GENERATION_TUNABLES
from engine.summarizer import SummaryOptions
from storage import SourcesGone, SummaryRecord, summaries

from .checks import require_readable
from .cooldowns import summary_request
from .errors import NO_ACCESS, AccessDenied, ChannelDisabled, NotReady, UserFacingError
from .mentions import NO_PINGS
from .progress import ProgressMessage
from .channel_names import summary_readers
from .jobs import SummaryJob, SummaryOutcome, ViewFactory
from .reading import Conversation, flush_buffered, read_conversation
from .render import ReplyContext, build_summary_messages, progress_text
from .reuse import find_reusable, fingerprint, reuse_note
from .stored import StoredSummaryView, structured_of
from .visibility import find_leaks
from .server_settings import load_settings, settings_channel_id  # noqa: F401  (re-exported for other cogs)

if TYPE_CHECKING:
    from .app import App
    from storage.settings import ResolvedSettings

log = logging.getLogger(__name__)
SOURCES_GONE = ("Some of those messages were deleted (or their author opted out) while I was summarizing, "
                "so I dropped that summary. Run the command again for one without them.")




def generation_settings(resolved: "ResolvedSettings", length: str | None = None) -> GenerationSettings:
    """What the channel's resolved settings ask for at ``length`` (default: the channel's length), through the
    engine's one function from settings to generation (unset knobs are the tunables' defaults there too)."""
    return generation_for(length or resolved["length"], **{t.name: resolved[t.name] for t in GENERATION_TUNABLES})


async def acknowledge(interaction: discord.Interaction, *, ephemeral: bool) -> None:
    """Defer at once (shows "thinking"), so the 3-second deadline never passes while we work."""
    if not interaction.response.is_done():
        await interaction.response.defer(ephemeral=ephemeral, thinking=True)


async def require_message(source: Any, message_id: int) -> None:
    """``from_message`` must name a message of the source; a wrong id gets the same answer as no access."""
    try:
        await source.fetch_message(message_id)
    except discord.HTTPException as exc:
        if exc.status >= 500:  # Discord itself failed: an internal error, not an answer about the message
            raise
        raise AccessDenied(NO_ACCESS) from None  # 404, 403, or 400 for an id Discord won't take


async def reply_would_leak(source: Any, destination: Any) -> bool:
    """Would a public reply in ``destination`` show ``source``'s content to someone who can't read it?

    Runs before the defer, so it is bounded: an answer that takes too long counts as a leak.
    """
    if destination is None or getattr(destination, "id", None) == getattr(source, "id", None):
        return False
    if isinstance(destination, discord.Thread) and destination.parent_id == getattr(source, "id", None):
        # A thread's readers are a subset of its parent's, except private threads, which are stricter still.
        return False
    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that lands as it finishes.
        async with asyncio.timeout(1.5):
            return bool(await find_leaks(source, destination))
    except (TimeoutError, discord.HTTPException):
        return True


async def run_summary(
    bot: "App",
    interaction: discord.Interaction,
    job: SummaryJob,
    *,
    view_factory: ViewFactory | None = None,
) -> SummaryOutcome:
    """Check, defer, read, summarize, reply, store. Raises ``UserFacingError``/``GenerationError`` for the handler."""
    guild = interaction.guild
    if guild is None or not isinstance(interaction.user, discord.Member):
        raise UserFacingError("Summaries work in servers only.")
    if not bot.accepting:
        raise NotReady("I'm shutting down. Try again in a minute.")
    if not bot.executor.ready:
        raise NotReady("I'm still starting up (loading the model). Try again in a minute.")
    resolved = await load_settings(bot, job.source)
    # Access first: any other answer about a channel she can't read (e.g. "turned off") would reveal it.
    # Checks that need no Discord request run before the defer, so their refusals stay ephemeral.
    await require_readable(interaction.user, guild.me, job.source)
    if not resolved["enabled"]:
        raise ChannelDisabled("Summaries are turned off in this channel. A server manager can turn them on with `/settings set enabled:True`.")
    private = resolved["private_default"] if job.private is None else job.private
    # The cooldown before the leak check: a member who must wait is told so without that work being done.
    with summary_request(bot.cooldowns, bot.guild_slots, interaction.user.id, guild.id):
        if not private and await reply_would_leak(job.source, interaction.channel):
            private = True
            job.notes += ("Sent only to you: some people who can see this channel can't read the one summarized.",)
        await acknowledge(interaction, ephemeral=private)
        if job.scope.from_id is not None:
            await require_message(job.source, job.scope.from_id)
        progress = ProgressMessage(interaction)
        conversation = await read_conversation(
            bot,
            job.source,
            job.scope,
            int(resolved["max_messages"]),
            progress=lambda stage, done, total: progress.update(progress_text(stage, done, total)),
            readers=summary_readers(interaction.user, job.source, interaction.channel, private),
        )
        await progress.settle()
        if not conversation.messages:
            raise UserFacingError("There are no messages to summarize there (my own messages and opted-out members are left out).")
        return await summarize_conversation(
            bot, interaction, conversation, job, resolved, private=private, progress=progress, view_factory=view_factory
        )


async def summarize_conversation(
    bot: "App",
    interaction: discord.Interaction,
    conversation: Conversation,
    job: SummaryJob,
    resolved: "ResolvedSettings",
    *,
    private: bool,
    progress: ProgressMessage | None = None,
    view_factory: ViewFactory | None = None,
) -> SummaryOutcome:
    """Summarize already-read messages, reply (editing the deferred response), store the summary.

    The caller has checked the member's access. A recent summary of exactly these messages
    (unchanged since) is shown again instead; a request like one already generating waits for it.
    """
    length = job.length or resolved["length"]
    style = job.style or resolved["style"]
    progress = progress or ProgressMessage(interaction)
    options = SummaryOptions(length=length, style=style, generation=job.generation or generation_settings(resolved, length))
    settings = options.generation
    digest = fingerprint(conversation, length, style, settings, bot.executor.backend.name)
    notes = job.notes
    try:
        reused = await find_reusable(bot, conversation, digest, interaction.user.id)
        if reused is not None:
            summary: Any = StoredSummaryView.of(reused)
            notes += (reuse_note(reused),)
        else:
            summary = await generate_shared(bot, conversation, options, digest, interaction.user.id, private,
                                            lambda stage, done, total: progress.update(progress_text(stage, done, total)))
    finally:
        await progress.finish()

    summary_id = await store_summary(bot, interaction.user.id, conversation, summary, length, style, private, digest,
                                     reused_from=reused.id if reused is not None else None)
    outcome = SummaryOutcome(summary, summary_id, job, length, style, private, [])
    ctx = ReplyContext(
        guild_id=conversation.guild_id,
        channel_id=conversation.channel_id,
        channel_name=getattr(job.source, "name", "channel"),
        length=length,
        style=style,
        capped_at=conversation.capped_at,
        skipped_files=tuple(conversation.skipped_files),
        notes=notes,
    )
    factory = view_factory or bot.services.summary_views.get()
    view = factory(outcome) if factory is not None and summary_id is not None else None
    outcome.messages = await send_summary(interaction, summary, ctx, private=private, view=view)
    return outcome


async def generate_shared(
    bot: "App",
    conversation: Conversation,
    options: SummaryOptions,
    digest: str,
    requester_id: int,
    private: bool,
    listener: Callable[[str, int, int], None],
) -> Any:
    """The summary, generated once for every concurrent request with the same fingerprint.

    A private request shares only with the same member's requests. The generation holds one
    executor slot for all its stages (``Executor.reserve``), taken by whoever started it.
    """
    key = (conversation.channel_id, digest, requester_id if private else None)

    async def work(report: Callable[[str, int, int], None]) -> Any:
        with bot.executor.reserve(str(conversation.guild_id), str(requester_id)) as reservation:
            return await bot.summarizer.summarize(
                conversation.messages,
                options,
                guild=str(conversation.guild_id),
                user=str(requester_id),
                priority=0,
                progress=report,
                job=reservation.job,
            )

    summary, _joined = await bot.shared_summaries.run(key, work, listener)
    return summary


async def store_summary(
    bot: "App",
    requester_id: int,
    conversation: Conversation,
    summary: Any,
    length: str,
    style: str,
    private: bool,
    digest: str | None = None,
    *,
    reused_from: int | None = None,
) -> int | None:
    """Store the summary for this requester (one record per member, so buttons and history are theirs)."""
    source_ids = list(summary.source_ids) or conversation.source_ids
    record = SummaryRecord(
        guild_id=conversation.guild_id,
        channel_id=conversation.channel_id,
        requester_id=requester_id,
        text=summary.text,
        length=length,
        style=style,
        settings=summary.settings.as_dict() if summary.settings is not None else {},
        source_ids=source_ids,
        private=private,
        structured=structured_of(summary, fingerprint=digest, reused_from=reused_from),
        start_id=min(source_ids) if source_ids else None,
        end_id=max(source_ids) if source_ids else None,
        start_at=summary.start,
        end_at=summary.end,
    )
    try:
        await flush_buffered(bot)  # the sources are checked against stored rows
        return await bot.db.writing(summaries.insert_summary, record, require_sources=True)
    except SourcesGone:  # deleted or opted out while generating: the summary would keep their text
        raise UserFacingError(SOURCES_GONE) from None
    except Exception:  # the member still gets the summary; history just lacks it
        log.exception("could not store the summary for channel %s", conversation.channel_id)
        return None


async def send_summary(
    interaction: discord.Interaction,
    summary: Any,
    ctx: ReplyContext,
    *,
    private: bool,
    view: discord.ui.View | None = None,
) -> list[discord.Message | discord.InteractionMessage]:
    """Edit the deferred reply into the summary; what does not fit one message follows up."""
    batches = build_summary_messages(summary, ctx)
    sent: list[discord.Message | discord.InteractionMessage] = []
    first_kwargs: dict[str, Any] = dict(content=None, embeds=batches[0], allowed_mentions=NO_PINGS)
    if view is not None:
        first_kwargs["view"] = view
    sent.append(await interaction.edit_original_response(**first_kwargs))
    for batch in batches[1:]:
        sent.append(await interaction.followup.send(embeds=batch, ephemeral=private, allowed_mentions=NO_PINGS, wait=True))
    return sent
