"""`python -m services.llm_memory`: the same as `ohlora serve llm_memory`."""

from ohlora.cli import app

app(["serve", "llm_memory", *__import__("sys").argv[1:]], prog_name="python -m services.llm_memory")
