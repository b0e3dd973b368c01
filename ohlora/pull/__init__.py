"""`ohlora models pull`: the original's weights and face data, verified, resumable, installed atomically.

Sources (sources.py): Hugging Face model repos and the original's face data files on GitHub, each at a commit.
Listings (listing.py) come from the Hub API, every page of them, and from GitHub's tree API even when GitHub
truncates it; a listing missing an included pattern or a required file stops the pull before any download.
Transfers (transfer.py) retry transient failures with backoff, resume with HTTP ranges, and carry HF_TOKEN and
GITHUB_TOKEN only to their own endpoints. Installation (install.py) checks free space first, stages each source
by commit, verifies every file (sha256 for LFS files, git blob sha1 for the rest) and moves the folders into place
only when all of them are verified, each with its manifest (manifest.py), which `ohlora models pull --check`
re-hashes.
Endpoints are configurable, so the same code runs against a mirror (the tests' imitation of the Hub and GitHub).
"""

from ohlora.pull.install import ALL_HUB_REPOS, check_free_space, choose_revision, ohlora_v2_config, os_error_line, pull
from ohlora.pull.listing import Listing, list_source
from ohlora.pull.manifest import INDEX, MANIFEST, Installed, Manifest, check_installed
from ohlora.pull.sources import (
    FACE_DATA_FILES,
    OHLORA_V2,
    Endpoints,
    GitHubFiles,
    HubRepo,
    PullError,
    Source,
    TransferError,
)
from ohlora.pull.transfer import RemoteFile, RetryPolicy

__all__ = [
    "ALL_HUB_REPOS", "FACE_DATA_FILES", "INDEX", "MANIFEST", "OHLORA_V2", "Endpoints", "GitHubFiles", "HubRepo",
    "Installed", "Listing", "Manifest", "PullError", "RemoteFile", "RetryPolicy", "Source", "TransferError",
    "check_free_space", "check_installed", "choose_revision", "list_source", "ohlora_v2_config", "os_error_line", "pull",
]
