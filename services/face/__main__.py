"""`python -m services.face`: the same as `ohlora serve face`."""

import sys

from ohlora.cli import app

app(["serve", "face", *sys.argv[1:]], prog_name="python -m services.face")
