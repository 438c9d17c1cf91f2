"""``python -m bot run`` as a child process pointed at a ``FakeDiscord``, with its log kept in a file."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Awaitable

from .server import FakeDiscord

REPO_ROOT = Path(__file__).resolve().parents[2]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) ")
# Settings the parent shell may have set that must not leak into the child.
_SCRUB_PREFIXES = ("DISCORD_", "RECAP_")


class BotProcess:
    def __init__(self, fake: FakeDiscord, *, token: str, database: Path, model_cache: Path, log_path: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.fake = fake
        self.log_path = log_path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
        self.env.update({
            "DISCORD_TOKEN": token, "DATABASE_PATH": str(database), "MODEL": "embedded",
            "MODEL_CACHE_DIR": str(model_cache), "DEVICE": "cpu", "DEV_GUILD_ID": str(fake.world.guild_id),
            "LOG_LEVEL": "INFO", "METRICS_PORT": "0", "PYTHONUNBUFFERED": "1",
            "RECAP_DISCORD_API_BASE": fake.api_base, "RECAP_DISCORD_GATEWAY": fake.gateway_url,
            "RECAP_TEST_MODE": "1",  # the redirect works only with this flag, and only to loopback
        })
        self.env.update(extra_env or {})
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> "BotProcess":
        # A settings file that does not exist: a developer's own .env must not change the test.
        no_env_file = str(self.log_path.with_suffix(".no-env"))
        log = open(self.log_path, "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "--env-file", no_env_file, "run", cwd=REPO_ROOT, env=self.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT)
        finally:
            log.close()
        return self

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def logged_errors(self) -> list[str]:
        """Lines of the bot's log at ERROR or above, and tracebacks: a clean run has none."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        plain = _ANSI.sub("", text)
        return [line for line in plain.splitlines() if _ERROR_LINE.search(line) or line.startswith("Traceback")]

    async def until(self, waiting: Awaitable[Any], *, what: str) -> Any:
        """Await ``waiting``, but fail at once with the bot's log if the process exits first."""
        assert self.proc is not None
        task = asyncio.ensure_future(waiting)
        exited = asyncio.ensure_future(self.proc.wait())
        done, _ = await asyncio.wait({task, exited}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            exited.cancel()
            try:
                return task.result()
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- bot log ---\n{self.log_tail()}") from None
        task.cancel()
        raise AssertionError(f"the bot exited (rc {self.proc.returncode}) while waiting for {what}\n"
                             f"--- bot log ---\n{self.log_tail()}")

    async def wait_connected(self, *, timeout: float, identify_count: int = 1) -> None:
        """IDENTIFY number ``identify_count`` received and the commands synced (now or before): to the
        server in DEV_GUILD_ID, or globally when it is empty (a bot in several servers)."""
        fake = self.fake
        await self.until(fake.wait_identified(timeout=timeout, count=identify_count), what="IDENTIFY")
        dev_guild = self.env.get("DEV_GUILD_ID", "")

        def synced() -> bool:
            return bool(fake.world.guild_commands.get(int(dev_guild)) if dev_guild else fake.world.global_commands)

        await self.until(fake.wait_for(synced, timeout=timeout, what="command sync"), what="command sync")

    async def stop(self, *, timeout: float) -> int:
        """SIGTERM, then wait; returns the exit code. Kills (and fails) if it does not exit in time."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"the bot did not exit within {timeout}s of SIGTERM\n{self.log_tail()}") from None

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
