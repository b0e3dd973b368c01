"""`python -m services.llm_summary`: the same as `ohlora serve llm_summary`."""

from ohlora.cli import app

app(["serve", "llm_summary", *__import__("sys").argv[1:]], prog_name="python -m services.llm_summary")
