"""Quick quality measurement of the Summarizer on a dialogue data set (ROUGE, invented names).

Usage: python bench/measure.py [N] [--length short] [--offset 0]
Reads /work/shared/data/dialogsum_dev.jsonl (not in the repo); prints ROUGE-1/2/L F1 and a few samples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rouge_score import rouge_scorer  # noqa: E402

from engine.conversation import ChatMessage  # noqa: E402
from engine.executor import Executor  # noqa: E402
from engine.generation import GenerationError  # noqa: E402
from engine.models import load_backend  # noqa: E402
from engine.summarizer import Summarizer, SummaryOptions  # noqa: E402

DATA = Path("/work/shared/data/dialogsum_dev.jsonl")


def to_messages(dialogue: str) -> list[ChatMessage]:
    out = []
    for line in dialogue.splitlines():
        speaker, _, text = line.partition(":")
        out.append(ChatMessage(None, speaker.strip(), text.strip()))
    return out


def names_ok(summary: str, dialogue: str) -> bool:
    """No #PersonN# tag absent from the dialogue."""
    return all(tag in dialogue for tag in re.findall(r"#Person\d+#", summary))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=50)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--length", default="short")
    ap.add_argument("--style", default="paragraph")
    ap.add_argument("--show", type=int, default=6)
    ap.add_argument("--dump", default="", help="write the outputs as JSON here")
    args = ap.parse_args()
    recs = [json.loads(x) for x in DATA.read_text().splitlines()][args.offset:args.offset + args.n]
    ex = Executor(lambda: load_backend("embedded", cache_dir="data/model-cache", cpu_threads=1), max_queue=512,
                  max_queue_per_guild=512, max_queue_per_user=512, max_batch_wait_ms=50,
                  request_timeout_s=7200)
    await ex.start()
    summarizer = Summarizer(ex)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    started = time.time()

    async def one(rec: dict) -> str:
        try:
            s = await summarizer.summarize(to_messages(rec["dialogue"]), SummaryOptions(args.length, args.style),
                                           user=rec["fname"])
            return s.text
        except GenerationError as exc:
            return f"<failed: {exc}>"

    outs = await asyncio.gather(*(one(r) for r in recs))
    await ex.aclose()
    if args.dump:
        Path(args.dump).write_text(json.dumps(outs))
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    failed = bad_names = 0
    for rec, out in zip(recs, outs):
        if out.startswith("<failed"):
            failed += 1
            out = ""
        bad_names += not names_ok(out, rec["dialogue"])
        for k, v in scorer.score(rec["summary"], out).items():
            totals[k] += v.fmeasure
    for out in outs[: args.show]:
        print("---", out[:300])
    n = len(recs)
    print(f"N={n} " + " ".join(f"{k}={100 * v / n:.1f}" for k, v in totals.items())
          + f" failed={failed} bad_names={bad_names} {time.time() - started:.0f}s")


if __name__ == "__main__":
    asyncio.run(main())
