"""`python -m services.llm_message`: the same as `ohlora serve llm_message`."""

from ohlora.cli import app

app(["serve", "llm_message", *__import__("sys").argv[1:]], prog_name="python -m services.llm_message")
