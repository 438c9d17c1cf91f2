"""The summarization engine: model loading, the batching executor, prompts, transcripts, the summarizer.

It knows nothing of Discord, the bot, its cogs or its storage (a test enforces this), so it can be
used offline, tested alone, and served behind any front end.
"""
