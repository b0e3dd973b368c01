"""What `ohlora models pull` downloads for the ohlora-v2 preset, where from, and at which commit.

Hub sources carry the commit this project pins them to. None of them is known yet: the Hub could not be
reached when this was written, so each stays None until someone who can reach it records the commit here
(docs/models.md). A pull then follows `main` once, and records the commit it resolved to in the installed
copy's manifest; later pulls stay on that commit (`--revision` moves them). The face data's GitHub commit is
known: the one the compatibility fixtures were made from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from services.face.face_data import GROUP_FILE, GROUPS, PROPERTIES, VECTOR_DIR, Z_FILE

DEFAULT_HUB = "https://huggingface.co"
GITHUB_API = "https://api.github.com"
GITHUB_RAW = "https://raw.githubusercontent.com"
UPSTREAM_COMMIT = "2cb8d2f68011974bf94fe65b15a26a73d467b44c"
FACE_DATA_DIR = "2025_05_02_OhLoRA_v2/stylegan/stylegan_vectorfind_v7"
# The 26 files services/face/face_data.py reads: z vectors, group names and 3 x 8 direction vectors.
FACE_DATA_FILES = (Z_FILE, GROUP_FILE,
                   *(f"{VECTOR_DIR}/{prop}_change_w_vector_{group}.csv" for prop in PROPERTIES for group in GROUPS))
SKIPPED_WEIGHTS = ("*.msgpack", "*.h5", "*.ot", "training_args.bin", ".gitattributes")


class PullError(RuntimeError):
    """A pull that cannot be trusted or completed. The message is one line that names the file or source and the fix."""


class TransferError(PullError):
    """A network failure that outlasted the retries; what was downloaded stays staged, so running again resumes."""


@dataclass(frozen=True)
class HubRepo:
    """A Hugging Face model repository, installed (filtered by include/exclude) into `dest` of the models folder."""

    repo: str
    dest: str
    pinned: str | None = None  # the commit this project installs; None: not known yet (module docstring)
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = SKIPPED_WEIGHTS
    required: tuple[str, ...] = ()  # files that must be in the listing (beyond each include pattern matching)


@dataclass(frozen=True)
class GitHubFiles:
    """Files of one folder of a GitHub repository at a commit, installed into `dest`."""

    repo: str
    pinned: str
    folder: str
    dest: str
    include: tuple[str, ...] = ("ohlora_z_vectors.csv", "ohlora_w_group_names.csv", "property_score_vectors/*_change_w_vector_*.csv")
    exclude: tuple[str, ...] = ()
    required: tuple[str, ...] = FACE_DATA_FILES


Source = HubRepo | GitHubFiles

OHLORA_V2: list[Source] = [
    HubRepo("EleutherAI/polyglot-ko-1.3b", "polyglot-ko-1.3b"),
    HubRepo("daebakgazua/250502_OhLoRA_LLM_output_message", "adapters/message"),
    HubRepo("daebakgazua/250502_OhLoRA_LLM_memory", "adapters/memory"),
    HubRepo("daebakgazua/250502_OhLoRA_LLM_summary", "adapters/summary"),
    HubRepo("daebakgazua/250502_OhLoRA_LLM_eyes_mouth_pose", "adapters/pose"),
    HubRepo("daebakgazua/250502_OhLoRA_LLM_SBERT", "sbert"),
    HubRepo("daebakgazua/250502_OhLoRA_StyleGAN_FineTuned", "stylegan", include=("stylegan_gen_vector_find_v7.pth",)),
    GitHubFiles("WannaBeSuperteur/AI_Projects", UPSTREAM_COMMIT, FACE_DATA_DIR, "face_data"),
]


def _base(url: str) -> str:
    return url.rstrip("/")


@dataclass
class Endpoints:
    """Where the Hub and GitHub are (or mirrors of them). Trailing slashes are dropped, so URLs join cleanly."""

    hub: str = field(default_factory=lambda: os.environ.get("HF_ENDPOINT") or DEFAULT_HUB)
    github_api: str = GITHUB_API
    github_raw: str = GITHUB_RAW

    def __post_init__(self) -> None:
        self.hub, self.github_api, self.github_raw = map(_base, (self.hub, self.github_api, self.github_raw))

    def tokens(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """URL prefix -> token: HF_TOKEN for the hub, GITHUB_TOKEN for GitHub; each only to its own endpoint."""
        env = dict(os.environ) if env is None else env
        pairs = [(self.hub, env.get("HF_TOKEN")), (self.github_api, env.get("GITHUB_TOKEN")),
                 (self.github_raw, env.get("GITHUB_TOKEN"))]
        return {prefix: token for prefix, token in pairs if token}
