"""`python -m services.llm_pose`: the same as `ohlora serve llm_pose`."""

from ohlora.cli import app

app(["serve", "llm_pose", *__import__("sys").argv[1:]], prog_name="python -m services.llm_pose")
