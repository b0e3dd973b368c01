"""End to end: real Redis, the real gateway, model services as subprocesses (tiny models fine-tuned in
the test), and the terminal client driven through a pseudo-terminal."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pexpect
import pytest

from conftest import md, servicer_on_loopback
from ohlora.chat import FAREWELL, PROMPT, SPEAKER
from ohlora.client import ServiceProcessHandle, free_port, wait_all_serving
from ohlora.v1 import gateway_pb2, gateway_pb2_grpc


def gateway_stub(handle: ServiceProcessHandle) -> gateway_pb2_grpc.GatewayStub:
    return gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(handle.address))


def turns(handle: ServiceProcessHandle, user: str) -> list[gateway_pb2.Turn]:
    return list(gateway_stub(handle).ListTurns(gateway_pb2.ListTurnsRequest(limit=20), metadata=md(user)).turns)


def test_a_person_chats_in_the_terminal(shared_stack):
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}
    child = pexpect.spawn(
        sys.executable, ["-m", "ohlora.cli", "chat", "--gateway", shared_stack.main.address, "--user", "alice", "--view", "halfblock"],
        env=env, encoding="utf-8", timeout=90, dimensions=(60, 120),
    )
    try:
        child.expect(r"Oh-LoRA face vector selected randomly : case No\. \d")
        child.expect_exact(PROMPT)
        child.sendline("나 내일 시험이야")
        child.expect_exact(SPEAKER)
        child.expect(r"[^\r\n]+\r\n")
        reply_line = child.after
        child.expect("▀")  # the face, drawn in half blocks
        child.expect_exact(PROMPT)
        child.sendline("로라야 나 떨려")
        child.expect_exact(SPEAKER)
        child.expect_exact(PROMPT)
        child.sendintr()
        child.expect_exact(FAREWELL)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert reply_line.strip(), "the person sees a reply"
    log = turns(shared_stack.main, "alice")
    assert [t.user_text for t in log] == ["나 내일 시험이야", "로라야 나 떨려"]
    assert all(t.status == "ok" for t in log), [(t.status, list(t.errors)) for t in log]
    assert log[0].memory_written == "[상태: 시험 준비]"
    assert log[1].final_input == "[상태: 시험 준비] 로라야 나 떨려", "the fact of turn 1 is recalled in turn 2"


def test_ctrl_c_ends_the_chat_even_when_started_with_sigint_ignored(shared_stack):
    """A chat started as a background job of a script inherits SIGINT ignored; Ctrl+C must still say goodbye."""
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    child = pexpect.spawn(
        sys.executable, ["-m", "ohlora.cli", "chat", "--gateway", shared_stack.main.address, "--user", "carol", "--view", "none"],
        env=env, encoding="utf-8", timeout=90, dimensions=(40, 120),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        child.expect_exact(PROMPT)
        child.sendintr()
        child.expect_exact(FAREWELL, timeout=15)
        child.expect(pexpect.EOF, timeout=15)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_without_a_memory_the_summary_carries_over(shared_stack):
    stub = gateway_stub(shared_stack.main)
    # The summary model samples (T=0.6, 3 attempts, as the original) and may fail a turn, which resets
    # the summary; a few users make the test independent of that chance.
    for attempt in range(4):
        user = f"bob{attempt}"
        for text in ["로라야 안녕", "로라야 뭐 해?"]:
            events = list(stub.Chat(gateway_pb2.ChatRequest(text=text), metadata=md(user)))
            assert any(e.HasField("reply_final") for e in events)
        first, second = turns(shared_stack.main, user)
        assert first.memory_written == ""
        if first.summary:
            assert second.final_input == f"(오로라 답변 요약) {first.summary} (사용자 질문) 로라야 뭐 해?"
            break
        assert second.final_input == "로라야 뭐 해?", "a failed summary leaves no summary for the next turn"
    else:
        pytest.fail("no first turn produced a summary in 4 tries")
    list(stub.Chat(gateway_pb2.ChatRequest(text="로라야 뭐 해?"), metadata=md("bob-other")))
    assert turns(shared_stack.main, "bob-other")[0].final_input == "로라야 뭐 해?", "another user never gets bob's summary"


def test_memory_file_round_trip_and_users_are_isolated(shared_stack):
    stub = gateway_stub(shared_stack.main)
    content = "[롤 티어: 실버]\n[오늘 날씨: 맑음]\n[오늘 날씨: 비]\n[좋아하는 꽃: 백합]\n"
    imported = stub.ImportMemories(gateway_pb2.ImportMemoriesRequest(content=content), metadata=md("carol"))
    assert (imported.added, imported.skipped) == (4, 0)
    assert stub.ExportMemories(gateway_pb2.ExportMemoriesRequest(), metadata=md("carol")).content == content
    again = stub.ImportMemories(gateway_pb2.ImportMemoriesRequest(content="[롤티어:  실버]\n아무 말\n"), metadata=md("carol"))
    assert (again.added, again.skipped) == (0, 2), "space-insensitive duplicates and non-memories are skipped"
    assert stub.ExportMemories(gateway_pb2.ExportMemoriesRequest(), metadata=md("dave")).content == ""
    assert stub.ListMemories(gateway_pb2.ListMemoriesRequest(), metadata=md("dave")).memories == []
    assert turns(shared_stack.main, "dave") == []
    carol = stub.ListMemories(gateway_pb2.ListMemoriesRequest(), metadata=md("carol")).memories
    gone = stub.ForgetMemory(gateway_pb2.ForgetMemoryRequest(id=carol[0].id), metadata=md("dave"))
    assert not gone.forgotten, "another user's memory id does nothing"
    assert len(stub.ListMemories(gateway_pb2.ListMemoriesRequest(), metadata=md("carol")).memories) == 4


def test_reply_and_expression_arrive_before_slow_background_work(shared_stack):
    slow = shared_stack.llm("memory,summary", env={"OHLORA_LLM__ARTIFICIAL_DELAY_SECONDS": "4"})
    slow.wait_serving()
    gw = shared_stack.gateway(shared_stack.fast.address, slow.address, slow.address, shared_stack.fast.address, shared_stack.face.address)
    gw.wait_serving()
    stub = gateway_stub(gw)
    started = time.monotonic()
    seen: dict[str, float] = {}
    for event in stub.Chat(gateway_pb2.ChatRequest(text="나 내일 시험이야"), metadata=md("erin")):
        seen.setdefault(event.WhichOneof("kind"), time.monotonic() - started)
    settled = time.monotonic() - started
    assert seen["reply_final"] < seen["expression"] < settled - 3.0, seen
    events = list(stub.Chat(gateway_pb2.ChatRequest(text="로라야 나 떨려"), metadata=md("erin")))
    assert any(e.HasField("reply_final") for e in events)
    log = turns(gw, "erin")
    assert log[0].memory_written == "[상태: 시험 준비]"
    assert log[1].final_input == "[상태: 시험 준비] 로라야 나 떨려", "the next turn sees the slow results"


def test_degraded_turns_still_answer_and_are_logged(shared_stack):
    dead = f"127.0.0.1:{free_port()}"
    quick = {"OHLORA_GATEWAY__POSE_DEADLINE": "20", "OHLORA_GATEWAY__FACE_DEADLINE": "5"}
    no_pose = shared_stack.gateway(shared_stack.fast.address, shared_stack.background.address, shared_stack.background.address, dead, dead, quick)
    no_message = shared_stack.gateway(dead, shared_stack.background.address, shared_stack.background.address, shared_stack.fast.address,
                               shared_stack.face.address, quick)
    wait_all_serving([no_pose, no_message])

    events = list(gateway_stub(no_pose).Chat(gateway_pb2.ChatRequest(text="로라야 안녕"), metadata=md("frank")))
    kinds = [e.WhichOneof("kind") for e in events]
    assert "reply_final" in kinds and "expression" in kinds and "error" not in kinds
    warnings = [e.warning for e in events if e.HasField("warning")]
    assert any("expression service failed" in w for w in warnings) and any("face service" in w for w in warnings)
    expression = next(e.expression for e in events if e.HasField("expression"))
    assert -0.6 <= expression.eyes <= -0.3 and -0.8 <= expression.mouth <= -0.4, "neutral fallback"

    events = list(gateway_stub(no_message).Chat(gateway_pb2.ChatRequest(text="로라야 안녕"), metadata=md("gina")))
    errors = [e.error for e in events if e.HasField("error")]
    assert len(errors) == 1 and errors[0].code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "UNAVAILABLE" in errors[0].message
    assert [t.status for t in turns(no_pose, "frank")] == ["ok"]
    assert [t.status for t in turns(no_message, "gina")] == ["error"]


def test_bad_messages_are_refused_and_logged(shared_stack):
    stub = gateway_stub(shared_stack.main)
    empty = list(stub.Chat(gateway_pb2.ChatRequest(text="   "), metadata=md("hank")))
    assert empty[-1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "empty" in empty[-1].error.message
    long = list(stub.Chat(gateway_pb2.ChatRequest(text=" ".join(str(n) for n in range(100, 160))), metadata=md("hank")))
    assert "혜나" in long[-1].error.message, "the original's 48-token message"
    assert [t.status for t in turns(shared_stack.main, "hank")] == ["refused"], "an empty message leaves no turn behind"


def test_watch_streams_face_frames(shared_stack):
    stub = gateway_stub(shared_stack.main)
    stub.ChooseFace(gateway_pb2.ChooseFaceRequest(face_id=2), metadata=md("ivy"))
    call = stub.Watch(gateway_pb2.WatchRequest(fps=20), metadata=md("ivy"))
    frames = []
    for frame in call:
        frames.append(frame)
        if len(frames) == 12:
            call.cancel()
            break
    assert all(f.image[:2] == b"\xff\xd8" for f in frames)
    with pytest.raises(grpc.RpcError) as info:
        next(iter(stub.Watch(gateway_pb2.WatchRequest(fps=500), metadata=md("ivy"))))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_turn_on_one_replica_moves_the_face_watched_on_another(shared_stack):
    other = shared_stack.gateway(shared_stack.fast.address, shared_stack.background.address, shared_stack.background.address,
                          shared_stack.fast.address, shared_stack.face.address)
    other.wait_serving()
    watch = gateway_stub(other).Watch(gateway_pb2.WatchRequest(fps=30), metadata=md("jack"))
    frames = iter(watch)
    for _ in range(5):
        next(frames)  # the stream is up
    events = list(gateway_stub(shared_stack.main).Chat(gateway_pb2.ChatRequest(text="로라야 안녕"), metadata=md("jack")))
    target = next(e.expression for e in events if e.HasField("expression"))
    closest = float("inf")
    for _, frame in zip(range(150), frames):
        e = frame.expression
        closest = min(closest, abs(e.eyes - target.eyes) + abs(e.mouth - target.mouth) + abs(e.pose - target.pose))
        if closest < 1e-3:
            break
    watch.cancel()
    assert closest < 1e-3, "the gesture reaches the expression chosen for the reply"


def test_memory_command_line(shared_stack, tmp_path):
    import subprocess

    def ohlora(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ohlora.cli", "memory", *args, "--gateway", shared_stack.main.address,
                               "--user", "kate"], input=stdin, capture_output=True, text=True, timeout=60)

    path = tmp_path / "ohlora_memory.txt"
    path.write_text("[좋아하는 과목: 과학]\n[내일 일정: 어린이날]\n", encoding="utf-8")
    assert ohlora("import", str(path)).stdout.strip() == "added 2, skipped 0"
    assert ohlora("add", "[MBTI: INFP]").returncode == 0
    assert ohlora("export").stdout == "[좋아하는 과목: 과학]\n[내일 일정: 어린이날]\n[MBTI: INFP]\n"
    first_id = ohlora("list").stdout.splitlines()[0].split("\t")[0]
    assert ohlora("forget", first_id).returncode == 0
    assert ohlora("forget", first_id).returncode == 1
    bad = ohlora("add", "그냥 문장")
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "[key: value]" in bad.stderr
    assert ohlora("export").stdout == "[내일 일정: 어린이날]\n[MBTI: INFP]\n"


def test_turns_of_one_user_are_serialised_across_replicas(shared_stack):
    """Two replicas, two turns of one user at once: the later turn sees the earlier turn's results."""
    from concurrent.futures import ThreadPoolExecutor

    other = shared_stack.gateway(shared_stack.fast.address, shared_stack.background.address, shared_stack.background.address,
                          shared_stack.fast.address, shared_stack.face.address)
    other.wait_serving()

    def chat(handle: ServiceProcessHandle, text: str) -> list[gateway_pb2.ChatEvent]:
        return list(gateway_stub(handle).Chat(gateway_pb2.ChatRequest(text=text), metadata=md("lena")))

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(chat, shared_stack.main, "나 내일 시험이야")
        time.sleep(0.05)
        second = pool.submit(chat, other, "로라야 나 떨려")
        results = [first.result(), second.result()]
    assert all(any(e.HasField("reply_final") for e in r) for r in results)
    log = turns(shared_stack.main, "lena")
    assert [t.user_text for t in log] == ["나 내일 시험이야", "로라야 나 떨려"]
    assert log[1].started >= log[0].ended, "the second turn starts after the first has settled"
    assert log[1].final_input == "[상태: 시험 준비] 로라야 나 떨려"


def test_the_face_shows_in_a_window_when_a_display_is_available(shared_stack):
    import shutil
    import subprocess

    from PIL import ImageGrab

    if shutil.which("Xvfb") is None or shutil.which("xdotool") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Xvfb and xdotool are needed (make system-deps)")
        pytest.skip("Xvfb or xdotool missing")
    display = f":{free_port() % 500 + 100}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "DISPLAY": display, "TERM": "xterm-256color"}
    child = pexpect.spawn(sys.executable, ["-m", "ohlora.cli", "chat", "--gateway", shared_stack.main.address, "--user", "mia"],
                          env=env, encoding="utf-8", timeout=90)
    try:
        child.expect_exact(PROMPT)
        window = ""
        for _ in range(100):
            found = subprocess.run(["xdotool", "search", "--name", "^Oh-LoRA$"], env=env, capture_output=True, text=True)
            window = found.stdout.strip()
            if window:
                break
            time.sleep(0.1)
        assert window, "a window titled Oh-LoRA appears"
        geometry = subprocess.run(["xdotool", "getwindowgeometry", window.splitlines()[0]], env=env,
                                  capture_output=True, text=True).stdout
        assert "512x512" in geometry, geometry
        time.sleep(1.0)
        first = ImageGrab.grab(xdisplay=display)
        child.sendline("로라야 안녕")
        child.expect_exact(SPEAKER)
        child.expect_exact(PROMPT)
        time.sleep(1.0)
        second = ImageGrab.grab(xdisplay=display)
        colours = len(np.unique(np.asarray(first).reshape(-1, 3), axis=0))
        first.save(Path(shared_stack.root) / "window.png")
        assert colours > 50, "the window shows a drawn face, not a blank area"
        assert first.tobytes() != second.tobytes(), "the face moves"
        child.sendintr()
        child.expect_exact(FAREWELL)
    finally:
        child.close(force=True)
        xvfb.terminate()


def test_idempotent_calls_are_retried_on_unavailable(shared_stack):
    """A memory service whose first Embed answers UNAVAILABLE (a replica restarting): the gateway's
    channel retries it, the turn recalls the memory, and no warning reaches the user."""
    from ohlora.v1 import llm_pb2_grpc

    calls: list[str] = []

    class FlakyMemory(llm_pb2_grpc.MemoryServiceServicer):
        """Fails the first Embed, then forwards everything to the real memory service."""

        def __init__(self) -> None:
            self.real = llm_pb2_grpc.MemoryServiceStub(grpc.aio.insecure_channel(shared_stack.background.address))

        async def Embed(self, request, context):
            calls.append("Embed")
            if calls.count("Embed") == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
            return await self.real.Embed(request)

        async def Extract(self, request, context):
            return await self.real.Extract(request)

    with servicer_on_loopback(lambda server: llm_pb2_grpc.add_MemoryServiceServicer_to_server(FlakyMemory(), server)) as address:
        gw = shared_stack.gateway(shared_stack.fast.address, address, shared_stack.background.address,
                           shared_stack.fast.address, shared_stack.face.address)
        gw.wait_serving()
        stub = gateway_stub(gw)
        stub.AddMemory(gateway_pb2.AddMemoryRequest(text="[좋아하는 음식: 떡볶이]"), metadata=md("nina"))
        events = list(stub.Chat(gateway_pb2.ChatRequest(text="로라야 안녕"), metadata=md("nina")))
        assert not [e.warning for e in events if e.HasField("warning") and "recall" in e.warning]
        assert calls.count("Embed") >= 2, calls
        assert turns(gw, "nina")[0].final_input == "[좋아하는 음식: 떡볶이] 로라야 안녕"


def test_doctor_reports_a_healthy_stack_and_names_fixes(shared_stack, tmp_path):
    import subprocess

    env = {
        **os.environ,
        "OHLORA_GATEWAY__REDIS_URL": shared_stack.redis.url,
        "OHLORA_GATEWAY__MESSAGE_ADDRESS": shared_stack.fast.address,
        "OHLORA_GATEWAY__POSE_ADDRESS": shared_stack.fast.address,
        "OHLORA_GATEWAY__MEMORY_ADDRESS": shared_stack.background.address,
        "OHLORA_GATEWAY__SUMMARY_ADDRESS": shared_stack.background.address,
        "OHLORA_GATEWAY__FACE_ADDRESS": shared_stack.face.address,
    }
    cmd = [sys.executable, "-m", "ohlora.cli", "doctor", "--config", str(shared_stack.config), "--gateway", shared_stack.main.address]
    healthy = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert healthy.returncode == 0, healthy.stdout
    assert "all good" in healthy.stdout and "redis" in healthy.stdout and "message service" in healthy.stdout

    dead = f"127.0.0.1:{free_port()}"
    broken_config = tmp_path / "broken.toml"
    broken_config.write_text('[llm]\nbase_model = "/nowhere/base"\n[llm.tasks.message]\n')
    env.update({"OHLORA_GATEWAY__REDIS_URL": f"redis://{dead}/0", "OHLORA_GATEWAY__FACE_ADDRESS": dead})
    broken = subprocess.run([*cmd[:5], str(broken_config), *cmd[6:]], env=env, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1
    out = broken.stdout
    assert "/nowhere/base does not exist" in out and "otherwise start one (redis-server --appendonly yes)" in out
    assert f"nothing answers at {dead}: start everything with `ohlora up` (or this one with `ohlora serve face`)" in out
    assert "250502_OhLoRA_LLM_SBERT is a hub id and is not downloaded here" in out
    assert "4 problems found" in out


def test_slash_commands_and_other_face_views(shared_stack, tmp_path):
    face_file = tmp_path / "face.png"
    env = {**os.environ, "TERM": "xterm-kitty", "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    child = pexpect.spawn(
        sys.executable, ["-m", "ohlora.cli", "chat", "--gateway", shared_stack.main.address, "--user", "olga", "--face", "3",
                         "--face-file", str(face_file)],
        env=env, encoding="utf-8", timeout=90, dimensions=(60, 120),
    )
    try:
        child.expect_exact("Oh-LoRA face: case No. 3")
        child.expect_exact(PROMPT)
        child.sendline("/help")
        child.expect_exact("/memory add [key: value]")
        child.sendline("/memory add [좋아하는 색: 보라]")
        child.expect(r"remembered \[좋아하는 색: 보라\] \(([0-9a-f]+)\)")
        memory_id = child.match.group(1)
        child.sendline("/memory list")
        child.expect_exact(f"{memory_id}  [좋아하는 색: 보라]")
        child.sendline("/memory export")
        child.expect_exact("[좋아하는 색: 보라]")
        child.sendline(f"/memory forget {memory_id}")
        child.expect_exact("forgotten")
        child.sendline("/memory list")
        child.expect_exact("(no memories yet)")
        child.sendline("/reset")
        child.expect_exact("the summary of the last answer is forgotten")
        child.sendline("/face 99")
        child.expect(r"Oh-LoRA face vector selected randomly : case No\. \d")
        child.sendline("/nonsense")
        child.expect_exact("unknown command")
        child.sendline("로라야 안녕")
        child.expect_exact(SPEAKER)
        child.expect_exact("\x1b_Ga=T,f=100,")  # the face inline, kitty graphics protocol
        child.expect_exact(PROMPT)
        child.sendintr()
        child.expect_exact(FAREWELL)
    finally:
        child.close(force=True)
    assert face_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "the latest frame is kept in the file"


def test_converse_says_each_turn_to_its_end_and_returns_them_oldest_first(shared_stack):
    """ohlora.chat.converse: what the scenario bench and scripts/conversations.py read whole conversations with."""
    from ohlora.chat import converse

    texts = ["로라야 안녕", "나 내일 시험이야", "로라야 뭐 해?"]
    logged = converse(gateway_stub(shared_stack.main), "carol-converse", texts)
    assert [t.user_text for t in logged] == texts
    assert all(t.reply for t in logged), "each turn settled before the next was said"
    assert logged == turns(shared_stack.main, "carol-converse")
