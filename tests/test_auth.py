"""Auth on: bearer tokens from `ohlora tokens`, stored hashed; no call passes without a valid token, and
no user can read or change another user's memories, summary, turn log, face or session."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import grpc
import pytest
import redis

from conftest import gateway_for
from gateway.keys import Keys
from ohlora.v1 import gateway_pb2, gateway_pb2_grpc

KEYS = Keys()


def ohlora_tokens(stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ohlora.cli", "tokens", *args, "--redis-url", stack.redis.url],
                          capture_output=True, text=True, timeout=60)


def create_token(stack, user: str) -> str:
    made = ohlora_tokens(stack, "create", "--user", user, "--label", f"{user}'s laptop")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def bearer(token: str, claimed_user: str | None = None) -> tuple[tuple[str, str], ...]:
    md: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),)
    return md + ((("x-ohlora-user", claimed_user),) if claimed_user else ())


@pytest.fixture(scope="module")
def secure(shared_stack):
    handle = gateway_for(shared_stack, auth=True)
    yield shared_stack, gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(handle.address)), handle.address
    handle.terminate()


# One request per public method; a call must fail before touching anything.
CALLS = {
    "Chat": lambda s, md: list(s.Chat(gateway_pb2.ChatRequest(text="로라야 안녕"), metadata=md, timeout=60)),
    "Watch": lambda s, md: next(iter(s.Watch(gateway_pb2.WatchRequest(fps=10), metadata=md, timeout=30))),
    "ListMemories": lambda s, md: s.ListMemories(gateway_pb2.ListMemoriesRequest(), metadata=md),
    "AddMemory": lambda s, md: s.AddMemory(gateway_pb2.AddMemoryRequest(text="[별명: 침입자]"), metadata=md),
    "ForgetMemory": lambda s, md: s.ForgetMemory(gateway_pb2.ForgetMemoryRequest(id="abc"), metadata=md),
    "ImportMemories": lambda s, md: s.ImportMemories(gateway_pb2.ImportMemoriesRequest(content="[a: b]\n"), metadata=md),
    "ExportMemories": lambda s, md: s.ExportMemories(gateway_pb2.ExportMemoriesRequest(), metadata=md),
    "ChooseFace": lambda s, md: s.ChooseFace(gateway_pb2.ChooseFaceRequest(face_id=1), metadata=md),
    "ResetSummary": lambda s, md: s.ResetSummary(gateway_pb2.ResetSummaryRequest(), metadata=md),
    "ListTurns": lambda s, md: s.ListTurns(gateway_pb2.ListTurnsRequest(), metadata=md),
    "Faces": lambda s, md: s.Faces(gateway_pb2.FacesRequest(size=32), metadata=md),
}


def test_calls_lists_every_public_method():
    assert set(CALLS) == set(gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods_by_name)


def test_tokens_are_created_listed_revoked_and_stored_hashed(shared_stack):
    token = create_token(shared_stack, "tess")
    assert token.startswith("ohl_") and len(token) > 40
    listed = ohlora_tokens(shared_stack, "list").stdout
    line = next(l for l in listed.splitlines() if "\ttess\t" in l)
    assert token not in listed and "tess's laptop" in line
    db = redis.Redis.from_url(shared_stack.redis.url)
    stored = db.hgetall(KEYS.tokens())
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored
    everything = b"".join(k + v for k, v in stored.items())
    assert token.encode() not in everything, "the token itself is never stored"
    token_id = line.split("\t")[0]
    assert ohlora_tokens(shared_stack, "revoke", token_id).stdout.strip() == "revoked 1 token(s)"
    assert "\ttess\t" not in ohlora_tokens(shared_stack, "list").stdout
    assert ohlora_tokens(shared_stack, "revoke", token_id).returncode == 1
    bad = ohlora_tokens(shared_stack, "create", "--user", "no spaces allowed")
    assert bad.returncode == 2 and "user id" in bad.stderr


@pytest.mark.parametrize("method", sorted(CALLS))
def test_every_method_needs_a_valid_token(secure, method):
    stack, stub, _ = secure
    revoked = create_token(stack, "rita")
    assert ohlora_tokens(stack, "revoke", "--user", "rita").returncode == 0
    attempts = {
        "no token, user header only": (("x-ohlora-user", "rita"),),
        "unknown token": bearer("ohl_" + "x" * 43),
        "revoked token": bearer(revoked),
        "not a bearer header": (("authorization", f"Basic {revoked}"),),
    }
    for what, md in attempts.items():
        with pytest.raises(grpc.RpcError) as info:
            CALLS[method](stub, md)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, (what, info.value.details())
        assert "token" in info.value.details() or "Bearer" in info.value.details()
    db = redis.Redis.from_url(stack.redis.url)
    assert not db.keys("ohlora:user:rita:*"), "refused calls leave nothing behind"


def test_a_user_cannot_reach_another_users_state(secure):
    stack, stub, _ = secure
    alice, mallory = create_token(stack, "alice-a"), create_token(stack, "mallory-a")
    a, m = bearer(alice), bearer(mallory, claimed_user="alice-a")  # mallory also claims to be alice
    db = redis.Redis.from_url(stack.redis.url)

    stub.AddMemory(gateway_pb2.AddMemoryRequest(text="[비밀번호: 토끼풀]"), metadata=a)
    events = list(stub.Chat(gateway_pb2.ChatRequest(text="로라야 안녕"), metadata=a, timeout=120))
    assert any(e.HasField("reply_final") for e in events)
    stub.ChooseFace(gateway_pb2.ChooseFaceRequest(face_id=2), metadata=a)
    db.set(KEYS.summary("alice-a"), "앨리스의 요약")  # a known summary to look for
    alice_memories = stub.ListMemories(gateway_pb2.ListMemoriesRequest(), metadata=a).memories
    before = {k: db.dump(k) for k in db.keys("ohlora:user:alice-a:*") if b":rate:" not in k}

    # Every method, as mallory, aimed at alice's data.
    assert stub.ListMemories(gateway_pb2.ListMemoriesRequest(), metadata=m).memories == []
    assert stub.ExportMemories(gateway_pb2.ExportMemoriesRequest(), metadata=m).content == ""
    assert stub.ListTurns(gateway_pb2.ListTurnsRequest(), metadata=m).turns == []
    for memory in alice_memories:
        assert not stub.ForgetMemory(gateway_pb2.ForgetMemoryRequest(id=memory.id), metadata=m).forgotten
    stub.ResetSummary(gateway_pb2.ResetSummaryRequest(), metadata=m)
    stub.ChooseFace(gateway_pb2.ChooseFaceRequest(face_id=3), metadata=m)
    stub.AddMemory(gateway_pb2.AddMemoryRequest(text="[별명: 말로리]"), metadata=m)
    stub.ImportMemories(gateway_pb2.ImportMemoriesRequest(content="[취미: 훔쳐보기]\n"), metadata=m)
    events = list(stub.Chat(gateway_pb2.ChatRequest(text="로라야 내 비밀번호 알아?"), metadata=m, timeout=120))
    assert any(e.HasField("reply_final") for e in events)
    watch = stub.Watch(gateway_pb2.WatchRequest(fps=10), metadata=m, timeout=30)
    next(iter(watch))
    watch.cancel()

    after = {k: db.dump(k) for k in db.keys("ohlora:user:alice-a:*") if b":rate:" not in k}
    assert after == before, "nothing of alice's changed"
    mallory_turns = stub.ListTurns(gateway_pb2.ListTurnsRequest(), metadata=bearer(mallory)).turns
    assert [t.user_text for t in mallory_turns] == ["로라야 내 비밀번호 알아?"]
    assert "토끼풀" not in mallory_turns[0].final_input and "앨리스의 요약" not in mallory_turns[0].final_input
    assert {m_.text for m_ in stub.ListMemories(gateway_pb2.ListMemoriesRequest(), metadata=bearer(mallory)).memories} >= {
        "[별명: 말로리]", "[취미: 훔쳐보기]"}
    assert int(db.get(KEYS.face("mallory-a"))) == 3 and int(db.get(KEYS.face("alice-a"))) == 2
    assert [t.user_text for t in stub.ListTurns(gateway_pb2.ListTurnsRequest(), metadata=a).turns] == ["로라야 안녕"]


def test_the_command_line_clients_use_tokens(secure, tmp_path):
    stack, _, address = secure
    token = create_token(stack, "cli-user")

    def ohlora(*args: str, token_value: str | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "OHLORA_TOKEN"}
        if token_value:
            env["OHLORA_TOKEN"] = token_value
        return subprocess.run([sys.executable, "-m", "ohlora.cli", *args, "--gateway", address], env=env,
                              capture_output=True, text=True, timeout=60)

    assert ohlora("memory", "add", "[좋아하는 차: 녹차]", token_value=token).returncode == 0
    assert ohlora("memory", "export", token_value=token).stdout == "[좋아하는 차: 녹차]\n"
    refused = ohlora("memory", "list", token_value=None)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr and "ohlora tokens create" in refused.stderr
    chat = ohlora("chat", "--view", "none", token_value="ohl_not-a-token")
    assert chat.returncode == 1 and "UNAUTHENTICATED" in chat.stdout and "not valid" in chat.stdout
