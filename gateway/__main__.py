"""`python -m gateway`: the same as `ohlora serve gateway`."""

import sys

from ohlora.cli import app

app(["serve", "gateway", *sys.argv[1:]], prog_name="python -m gateway")
