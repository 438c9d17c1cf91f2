"""Fine-tuning and evaluation, next to the engine: training pairs built through the serving prompts
(``data``), the LoRA trainer (``trainer``) and the model-free scores (``scoring``). The adapter format
they write is ``engine.adapters``; the command lines are ``bot/cli_finetune.py`` and ``bot/cli_eval.py``."""
