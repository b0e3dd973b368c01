"""A task on a base model of its own (`[llm.tasks.X] base_model`, mini's reply on the 1.5B): one LLM process per
base, started by the stack as `ohlora up` starts it; tasks on different bases refused in one process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from ohlora.chat import converse
from ohlora.config import load_settings
from ohlora.errors import ConfigError
from ohlora.stack import LocalStack
from ohlora.v1 import gateway_pb2_grpc


@pytest.fixture(scope="module")
def two_bases(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny config with the reply on a copy of the tiny base (another folder: another base to the config),
    and a persona adapter merged under the tasks on the shared base only."""
    root = tmp_path_factory.mktemp("two-bases")
    reply_base = shutil.copytree(tiny_models.base, root / "reply-base")
    config = root / "ohlora.toml"
    text = tiny_models.config_toml("original").replace(
        "[llm]\n", f'[llm]\nbase_adapter = "{tiny_models.adapters["pose"]}"\n', 1)
    config.write_text(text.replace("[llm.tasks.message]\n", f'[llm.tasks.message]\nbase_model = "{reply_base}"\n'))
    return config, reply_base


def test_tasks_are_grouped_by_base_and_the_persona_goes_under_the_shared_base_only(two_bases, tiny_models):
    config, reply_base = two_bases
    llm = load_settings(config).llm
    assert llm.process_groups() == [["message"], ["memory", "summary", "pose"]]
    assert llm.base_for(["message"]) == str(reply_base)
    assert llm.base_for(["memory", "pose"]) == str(tiny_models.base)
    # The base adapter was trained on llm.base_model: the reply's own base gets its own adapter alone (merged).
    assert llm.adapters_for(["message"]) == (str(tiny_models.adapters["message"]), {})
    assert llm.adapters_for(["memory", "pose"])[0] == str(tiny_models.adapters["pose"])
    with pytest.raises(ConfigError, match="different base models.*message and memory,summary,pose"):
        llm.base_for(["message", "memory"])


def test_one_process_refuses_tasks_on_two_bases(two_bases):
    config, _ = two_bases
    run = subprocess.run([sys.executable, "-m", "ohlora.cli", "serve", "llm", "--tasks", "message,memory",
                          "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "different base models" in run.stderr and "ohlora serve llm --tasks" in run.stderr


def test_the_stack_runs_one_llm_process_per_base_and_a_turn_goes_through_both(two_bases, tmp_path):
    config, reply_base = two_bases
    stack = LocalStack(tmp_path, config)
    try:
        stack.consolidated()
        assert stack.fast is not stack.background
        turn, = converse(gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(stack.main.address)), "bases", ["안녕 로라야"])
        assert turn.reply
        # Each process loaded its own base (the engine logs the folder it loads).
        assert f"loading base {reply_base}" in stack.fast.log()
        assert f"loading base {reply_base}" not in stack.background.log()
        assert "loading base " in stack.background.log()
    finally:
        stack.close()
