"""`ohlora serve web` end to end: the page in Debian's headless Chromium and the OpenAI-compatible API through
the official `openai` client, in front of real gateways on the shared stack (real Redis, tiny fine-tuned models).

What the tiny models answer is fixed by their fine-tuning (ohlora/tiny.py TRAINING), so memories and final inputs
are checked through the gateway's own records (ListMemories, ListTurns), as tests/test_gateway_e2e.py does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from conftest import gateway_for, md, wait_until
from deploy_support import require_tool
from ohlora.v1 import gateway_pb2, gateway_pb2_grpc, llm_pb2

FACT_TURN, RECALL_TURN = "나 내일 시험이야", "로라야 나 떨려"
FACT = "[상태: 시험 준비]"
# Short in tokens (the original rejects replies whose prompt + answer reach 91 tokens) and ASCII but for a word the
# tiny tokenizer knows whole (a mis-sampled byte of a rarer syllable would be a broken character, also rejected).
SCRIPT_REPLY = " <script>pwned=1</script><img src=x onerror=pwned=2><b>안녕</b>"


def stub(address: str) -> gateway_pb2_grpc.GatewayStub:
    return gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(address))


def turns(address: str, user: str) -> list[gateway_pb2.Turn]:
    return list(stub(address).ListTurns(gateway_pb2.ListTurnsRequest(limit=20), metadata=md(user)).turns)


def memories(address: str, user: str) -> list[str]:
    return [m.text for m in stub(address).ListMemories(gateway_pb2.ListMemoriesRequest(), metadata=md(user)).memories]


def settled(address: str, user: str, count: int) -> list[gateway_pb2.Turn]:
    """The user's turn log once `count` turns have ended."""
    wait_until(lambda: len([t for t in turns(address, user) if t.ended]) >= count, 120, f"{count} settled turns of {user}")
    return turns(address, user)


@pytest.fixture(scope="module")
def web(shared_stack):
    """The web tier in front of the shared stack's gateway (auth off)."""
    handle = shared_stack.web(shared_stack.main.address)
    yield f"http://{handle.address}"
    handle.terminate()


def create_token(stack, user: str) -> str:
    done = subprocess.run([sys.executable, "-m", "ohlora.cli", "tokens", "create", "--user", user, "--redis-url", stack.redis.url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def locked(shared_stack):
    """A gateway with auth on and one turn per minute per user, and a web tier in front of it."""
    gateway = gateway_for(shared_stack, auth=True, turns_per_minute=1, turn_burst=1)
    handle = shared_stack.web(gateway.address)
    yield f"http://{handle.address}", gateway
    handle.terminate()
    gateway.terminate()


@pytest.fixture(scope="module")
def scripted(shared_stack, tmp_path_factory):
    """A message model fine-tuned to answer with HTML, behind its own gateway and web tier."""
    from ohlora.tiny import build_adapter

    root = shared_stack.config.parent
    adapter = build_adapter(root / "models" / "base", tmp_path_factory.mktemp("script") / "adapter-message", seed=5,
                            examples=[("로라야 코드 보여줘", SCRIPT_REPLY)], steps=400)
    config = tmp_path_factory.mktemp("script-config") / "ohlora.toml"
    config.write_text(shared_stack.config.read_text().replace(str(root / "models" / "adapter-message"), str(adapter)))
    llm = shared_stack.service("serve", "llm", "--tasks", "message,pose", "--config", str(config),
                               env={"OHLORA_LLM__SEED": "7"})  # the same sampling every run
    llm.wait_serving()
    gateway = shared_stack.gateway(llm.address, shared_stack.background.address, shared_stack.background.address, llm.address,
                                   shared_stack.face.address)
    gateway.wait_serving()
    handle = shared_stack.web(gateway.address)
    yield f"http://{handle.address}", gateway
    for h in (handle, gateway, llm):
        h.terminate()


# ---------------------------------------------------------------- the page, in Chromium

@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = require_tool("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--lang=ko-KR", "--window-size=1280,860",
                     "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=require_tool("chromedriver")))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def wait_js(driver, script: str, seconds: float, what: str):
    """Polls a JS expression until it is truthy; returns its value."""
    result = None

    def ready() -> bool:
        nonlocal result
        result = driver.execute_script(f"return ({script});")
        return bool(result)

    wait_until(ready, seconds, what)
    return result


def open_page(driver, base: str, user: str) -> None:
    driver.get(f"{base}/?user={user}")
    wait_js(driver, "Number(document.getElementById('face').dataset.frames) >= 2", 60, "the live face")


RECORD_REPLY = """
window.replySnapshots = [];
new MutationObserver((records) => {
  for (const r of records)
    if (r.target.classList && r.target.classList.contains('text'))
      for (const n of r.addedNodes) window.replySnapshots.push(n.textContent);
}).observe(document.getElementById('log'), {childList: true, subtree: true});
"""


def test_a_person_chats_in_korean_on_the_page(browser, web, shared_stack):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    user = "web-alice"
    open_page(browser, web, user)
    browser.execute_script(RECORD_REPLY)
    frames_before = set()
    for _ in range(6):
        frames_before.add(browser.execute_script("return document.getElementById('face').src;"))
        time.sleep(0.25)
    assert len(frames_before) >= 2, "the idle face moves (new frames keep coming)"

    box = browser.find_element(By.ID, "input")
    box.send_keys(FACT_TURN)
    box.send_keys(Keys.ENTER)
    wait_js(browser, "document.getElementById('expression').textContent", 120, "the expression")
    assert not browser.find_element(By.ID, "send").get_attribute("disabled"), "the input is back once reply + expression are in"
    final = browser.execute_script("return document.querySelector('#log li.ohlora .text').textContent;")
    snapshots = browser.execute_script("return window.replySnapshots;")
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#log li.user")] == [FACT_TURN]
    assert any(0 < len(s) < len(final) and final.startswith(s) for s in snapshots), f"the reply streams in: {snapshots}"

    texts = wait_js(browser, "[...document.querySelectorAll('#memories .memory-text')].map(e => e.textContent).join('\\n')", 120,
                    "the extracted memory in the panel")
    assert texts.split("\n") == memories(shared_stack.main.address, user) and texts.startswith("[상태:"), texts
    log = turns(shared_stack.main.address, user)
    assert [t.user_text for t in log] == [FACT_TURN] and log[0].reply == final, "the page shows her whole reply"
    # Sampled over time, as before the turn: three reads in a row could all land on one frame, and the idle loop
    # repeats its frames, so "a frame not seen before" failed by chance (CI, once); a frozen face still fails.
    frames_after = set()
    for _ in range(6):
        frames_after.add(browser.execute_script("return document.getElementById('face').src;"))
        time.sleep(0.25)
    assert len(frames_after) >= 2, "face frames keep changing after the turn"
    if os.environ.get("OHLORA_WEB_SCREENSHOT"):  # docs/images/web.png is taken here
        browser.save_screenshot(os.environ["OHLORA_WEB_SCREENSHOT"])

    browser.find_element(By.CSS_SELECTOR, "#memories li .forget").click()
    wait_js(browser, "document.querySelector('#memories li.empty')", 30, "the memory forgotten in the panel")
    assert memories(shared_stack.main.address, user) == [], "the gateway forgot it too"


IME_SEQUENCES = {
    # Windows/Linux Chrome: the Enter that commits the syllable comes while composing, then compositionend.
    "chrome": ["compose", "enter-composing", "commit"],
    # macOS Chrome: the same, then one more Enter keydown that is no longer composing.
    "mac-chrome": ["compose", "enter-composing", "commit", "enter"],
    # Safari: compositionend first, then the Enter keydown (keyCode 229, not composing).
    "safari": ["compose", "commit", "enter-229"],
}
# The IME's part is played as a browser does: the composed syllable is in the box while composing, and the
# commit writes it into the box (so a page that emptied the box too early gets a stray "요").
IME_STEPS = """
const box = document.getElementById('input');
const key = (init) => box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', code: 'Enter', bubbles: true, cancelable: true, ...init}));
const comp = (type, data) => box.dispatchEvent(new CompositionEvent(type, {data, bubbles: true}));
for (const step of arguments[0]) {
  if (step === 'compose') {
    box.focus(); box.value = '안녕하세'; comp('compositionstart', '');
    box.value = '안녕하세ㅇ'; comp('compositionupdate', 'ㅇ'); box.value = '안녕하세요'; comp('compositionupdate', '요');
  } else if (step === 'enter-composing') key({isComposing: true, keyCode: 229});
  else if (step === 'commit') {
    if (!box.value.endsWith('요')) box.value += '요';
    box.dispatchEvent(new InputEvent('input', {data: '요', inputType: 'insertCompositionText', bubbles: true}));
    comp('compositionend', '요');
  }
  else if (step === 'enter') key({isComposing: false, keyCode: 13});
  else if (step === 'enter-229') key({isComposing: false, keyCode: 229});
}
"""


@pytest.mark.parametrize("sequence", list(IME_SEQUENCES))
def test_one_enter_in_a_korean_ime_sends_the_whole_message_once(browser, web, shared_stack, sequence):
    from selenium.webdriver.common.by import By

    user = f"web-ime-{sequence}"
    open_page(browser, web, user)
    browser.execute_script(IME_STEPS, IME_SEQUENCES[sequence])
    wait_js(browser, "document.getElementById('expression').textContent", 120, "the answer")
    time.sleep(1.0)  # a second message would have been sent by now
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#log li.user")] == ["안녕하세요"]
    assert browser.execute_script("return document.getElementById('input').value;") == "", "no stray syllable left"
    assert [t.user_text for t in settled(shared_stack.main.address, user, 1)] == ["안녕하세요"]


def test_model_text_is_shown_as_text_never_as_html(browser, scripted):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, gateway = scripted
    open_page(browser, base, "web-html")
    box = browser.find_element(By.ID, "input")
    box.send_keys("로라야 코드 보여줘" + Keys.ENTER)
    wait_js(browser, "document.getElementById('expression').textContent", 120, "the answer")
    shown = browser.execute_script("return document.querySelector('#log li.ohlora .text').textContent;")
    reply = settled(gateway.address, "web-html", 1)[0].reply
    assert "<script>" in reply, f"the fine-tuned model answers with HTML: {reply!r}"
    assert shown == reply
    assert browser.execute_script("return document.querySelectorAll('#log script, #log img, #log b').length;") == 0
    assert browser.execute_script("return window.pwned;") is None

    browser.find_element(By.ID, "memory-text").send_keys("[메모: <img src=x onerror=window.pwned=3>]" + Keys.ENTER)
    wait_js(browser, "[...document.querySelectorAll('#memories .memory-text')].some(e => e.textContent.includes('<img'))", 30,
            "the memory as text")
    assert browser.execute_script("return document.querySelectorAll('#memories img').length;") == 0
    assert browser.execute_script("return window.pwned;") is None


def test_the_page_asks_for_a_token_when_the_gateway_wants_one(browser, locked, shared_stack):
    from selenium.webdriver.common.by import By

    base, _ = locked
    browser.execute_script("localStorage.clear();")
    browser.get(f"{base}/")
    wait_js(browser, "document.getElementById('token-dialog').open", 30, "the token prompt")
    browser.find_element(By.ID, "token-input").send_keys(create_token(shared_stack, "web-token"))
    browser.find_element(By.ID, "token-save").click()
    wait_js(browser, "Number(document.getElementById('face').dataset.frames) >= 2", 60, "the face, with the token")
    wait_js(browser, "document.querySelector('#memories li.empty')", 30, "the memory panel, with the token")
    browser.execute_script("localStorage.clear();")


def test_face_chooser_shows_the_faces_and_chooses_one(browser, web, shared_stack):
    from selenium.webdriver.common.by import By

    open_page(browser, web, "web-faces")
    browser.find_element(By.ID, "open-faces").click()
    wait_js(browser, "document.querySelectorAll('#faces figure img').length >= 2", 60, "the contact sheet")
    figure = browser.find_elements(By.CSS_SELECTOR, "#faces figure")[1]
    face = int(figure.get_attribute("data-face"))
    figure.click()
    wait_js(browser, f"document.querySelector('#faces figure.chosen')?.dataset.face === '{face}'", 30, "the chosen face")
    listed = stub(shared_stack.main.address).Faces(gateway_pb2.FacesRequest(), metadata=md("web-faces"))
    assert listed.chosen == face and all(f.image[:2] == b"\xff\xd8" for f in listed.faces)


def test_the_memory_panel_imports_and_exports_the_original_file_format(browser, web, shared_stack, tmp_path):
    from selenium.webdriver.common.by import By

    open_page(browser, web, "web-files")
    memory_file = tmp_path / "ohlora_memory.txt"
    memory_file.write_text("[좋아하는 음식: 떡볶이]\n[내일 일정: 어린이날]\n아무 말\n", encoding="utf-8")
    chooser = browser.find_element(By.ID, "import-file")
    browser.execute_script("arguments[0].hidden = false;", chooser)
    chooser.send_keys(str(memory_file))
    wait_js(browser, "document.querySelectorAll('#memories .memory-text').length === 2", 30, "the imported memories")
    assert "2 added, 1 skipped" in browser.find_element(By.CSS_SELECTOR, "#log li.note").text
    assert memories(shared_stack.main.address, "web-files") == ["[좋아하는 음식: 떡볶이]", "[내일 일정: 어린이날]"]

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.find_element(By.ID, "export").click()
    exported = downloads / "ohlora_memory.txt"
    wait_until(exported.exists, 30, "the exported file")
    assert exported.read_text(encoding="utf-8") == "[좋아하는 음식: 떡볶이]\n[내일 일정: 어린이날]\n"

    browser.find_element(By.ID, "reset-summary").click()
    wait_js(browser, "[...document.querySelectorAll('#log li.note')].some(e => e.textContent.includes('summary forgotten'))", 30,
            "the summary reset")


def test_the_page_fits_a_phone(browser, web):
    browser.set_window_size(390, 844)
    try:
        open_page(browser, web, "web-phone")
        layout = browser.execute_script("""
            const box = (id) => document.getElementById(id).getBoundingClientRect();
            return {face: box('face-panel').bottom, chat: box('chat-panel').top,
                    wide: document.scrollingElement.scrollWidth, width: window.innerWidth};""")
        assert layout["face"] <= layout["chat"], "the face sits above the chat"
        assert layout["wide"] <= layout["width"], "nothing scrolls sideways"
    finally:
        browser.set_window_size(1280, 860)


# ---------------------------------------------------------------- the OpenAI-compatible API

def client(base: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=180)


def test_the_openai_client_lists_the_model_and_gets_replies_streamed_and_not(web, shared_stack):
    api = client(web)
    assert [m.id for m in api.models.list().data] == ["ohlora"]
    whole = api.chat.completions.create(model="ohlora", messages=[{"role": "user", "content": "로라야 안녕"}], user="oa-whole")
    reply = whole.choices[0].message.content
    assert reply and whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    assert settled(shared_stack.main.address, "oa-whole", 1)[0].reply == reply

    chunks = list(api.chat.completions.create(model="ohlora", messages=[{"role": "user", "content": "로라야 안녕"}], user="oa-stream",
                                              stream=True, stream_options={"include_usage": True}))
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) >= 2, "the reply streams in pieces"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    reply = settled(shared_stack.main.address, "oa-stream", 1)[0].reply
    streamed = "".join(content)
    # A rejected attempt (the original's retry rules) cannot be taken back from an OpenAI stream: the stream then ends
    # with a blank line and the accepted reply (docs/web.md). Without a retry it is the reply itself.
    assert streamed == reply or streamed.endswith("\n\n" + reply), (streamed, reply)


def test_a_fact_said_in_one_request_is_recalled_in_the_next(web, shared_stack):
    api = client(web)
    api.chat.completions.create(model="ohlora", messages=[{"role": "user", "content": FACT_TURN}], user="oa-recall")
    history = [{"role": "system", "content": "ignored: Oh-LoRA has her own persona"},
               {"role": "user", "content": FACT_TURN}, {"role": "assistant", "content": "..."},
               {"role": "user", "content": [{"type": "text", "text": RECALL_TURN}]}]
    list(api.chat.completions.create(model="ohlora", messages=history, user="oa-recall", stream=True))
    first, second = settled(shared_stack.main.address, "oa-recall", 2)
    assert first.memory_written.startswith("[상태:"), f"the memory model extracts the fact (it samples; usually {FACT})"
    assert second.final_input == f"{first.memory_written} {RECALL_TURN}", "only the last user message is the turn, fact recalled"


def test_without_a_user_the_default_user_is_oh_loras_counterpart(web, shared_stack):
    client(web).chat.completions.create(model="ohlora", messages=[{"role": "user", "content": "로라야 뭐 해?"}])
    assert any(t.user_text == "로라야 뭐 해?" for t in settled(shared_stack.main.address, "local", 1))


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and "Traceback" not in response.text
    return error


@pytest.mark.parametrize("body,param", [
    ({"messages": [{"role": "user", "content": "안녕"}]}, "model"),
    ({"model": "ohlora"}, "messages"),
    ({"model": "ohlora", "messages": []}, "messages"),
    ({"model": "ohlora", "messages": [{"role": "assistant", "content": "안녕"}]}, "messages"),
    ({"model": "ohlora", "messages": [{"role": "wizard", "content": "안녕"}]}, "messages[0]"),
    ({"model": "ohlora", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content"),
    ({"model": "ohlora", "messages": [{"role": "user", "content": "안녕"}], "n": 2}, "n"),
    ({"model": "ohlora", "messages": [{"role": "user", "content": "안녕"}], "tools": [{"type": "function"}]}, "tools"),
    ({"model": "ohlora", "messages": [{"role": "user", "content": "안녕"}], "response_format": {"type": "json_object"}},
     "response_format"),
    ({"model": "ohlora", "messages": [{"role": "user", "content": "안녕"}], "stream": "yes"}, "stream"),
    ({"model": "ohlora", "messages": [{"role": "user", "content": "안녕"}], "user": "이름"}, "user"),
])
def test_bad_requests_are_400_with_an_openai_error(web, body, param):
    error = error_of(httpx.post(f"{web}/v1/chat/completions", json=body, timeout=30), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_bad_input_gets_the_right_status_never_a_traceback(web, shared_stack):
    post = lambda **kw: httpx.post(f"{web}/v1/chat/completions", timeout=60, **kw)  # noqa: E731
    error_of(post(content=b"{not json", headers={"content-type": "application/json"}), 400)
    error_of(post(content=b"[1, 2]", headers={"content-type": "application/json"}), 400)
    assert error_of(post(json={"model": "gpt-4o", "messages": [{"role": "user", "content": "안녕"}]}), 404)["code"] == "model_not_found"
    error_of(post(content=b"x" * (600 * 1024), headers={"content-type": "application/json"}), 413)
    too_long = {"model": "ohlora", "messages": [{"role": "user", "content": "가" * 600}], "user": "oa-long"}
    assert "limit is 500" in error_of(post(json=too_long), 413)["message"]
    for stream in (False, True):  # refused before the stream starts: still an HTTP error
        guard = {"model": "ohlora", "messages": [{"role": "user", "content": " ".join(str(n) for n in range(100, 160))}],
                 "user": "oa-guard", "stream": stream}
        assert "혜나" in error_of(post(json=guard), 400)["message"], "the original's 48-token message"
    error_of(post(json={"model": "ohlora", "messages": [{"role": "user", "content": "   "}], "user": "oa-empty"}), 400)
    error_of(httpx.get(f"{web}/v1/nothing", timeout=10), 404)
    error_of(httpx.get(f"{web}/v1/chat/completions", timeout=10), 405)
    with pytest.raises(openai.BadRequestError):
        client(web).chat.completions.create(model="ohlora", messages=[{"role": "user", "content": "  "}], user="oa-empty")
    assert memories(shared_stack.main.address, "oa-guard") == []


def test_auth_and_rate_limits_are_the_gateways(locked, shared_stack):
    base, gateway = locked
    body = {"model": "ohlora", "messages": [{"role": "user", "content": "로라야 안녕"}], "user": "someone-else"}
    assert error_of(httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60), 401)["code"] == "invalid_api_key"
    bad = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60, headers={"authorization": "Bearer ohl_nope"})
    error_of(bad, 401)
    with pytest.raises(openai.AuthenticationError):
        client(base, "ohl_nope").models.list()
    token = create_token(shared_stack, "oa-token")
    api = client(base, token)
    assert api.chat.completions.create(**body).choices[0].message.content
    main = shared_stack.main.address  # the same Redis, read without a token
    assert [t.user_text for t in settled(main, "oa-token", 1)] == ["로라야 안녕"], "the token's user, not `user`"
    assert turns(main, "someone-else") == []
    limited = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60, headers={"authorization": f"Bearer {token}"})
    assert error_of(limited, 429)["type"] == "rate_limit_error" and int(limited.headers["retry-after"]) >= 1


def test_a_dropped_stream_loses_nothing(web, shared_stack):
    body = {"model": "ohlora", "messages": [{"role": "user", "content": FACT_TURN}], "user": "oa-dropped", "stream": True}
    with httpx.stream("POST", f"{web}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # the first piece of the reply: the client goes away
    log = settled(shared_stack.main.address, "oa-dropped", 1)
    assert log[0].status == "ok" and log[0].memory_written.startswith("[상태:"), "the turn finished in the gateway"


def test_the_page_api_streams_a_turn_until_it_settles(web, shared_stack):
    with httpx.stream("POST", f"{web}/api/chat", json={"text": FACT_TURN}, headers={"x-ohlora-user": "web-lines"},
                      timeout=120) as response:
        kinds = [__import__("json").loads(line)["type"] for line in response.iter_lines() if line]
    assert kinds.index("final") < kinds.index("expression") < kinds.index("settled") == len(kinds) - 1
    assert "delta" in kinds and "error" not in kinds
    extracted = memories(shared_stack.main.address, "web-lines")
    assert len(extracted) == 1 and extracted[0].startswith("[상태:"), extracted
    exported = httpx.get(f"{web}/api/memories/export", headers={"x-ohlora-user": "web-lines"}, timeout=30)
    assert exported.text == f"{extracted[0]}\n" and "ohlora_memory.txt" in exported.headers["content-disposition"]
    imported = httpx.post(f"{web}/api/memories/import", content="[좋아하는 꽃: 백합]\n아무 말\n".encode(),
                          headers={"x-ohlora-user": "web-lines", "content-type": "text/plain"}, timeout=30)
    assert imported.json() == {"added": 1, "skipped": 1}
    assert memories(shared_stack.main.address, "web-lines") == [extracted[0], "[좋아하는 꽃: 백합]"]
    assert httpx.delete(f"{web}/api/memories/nope", headers={"x-ohlora-user": "web-lines"}, timeout=30).status_code == 404
    assert httpx.post(f"{web}/api/summary/reset", headers={"x-ohlora-user": "web-lines"}, timeout=30).json() == {"reset": True}


async def streamed_content(events: list[gateway_pb2.ChatEvent]) -> tuple[str, list[str]]:
    """What an OpenAI client shows from the web tier's SSE encoding of these gateway events, and the raw lines."""
    import json

    from ohlora.web.openai_api import Completion, answer_events, sse
    from ohlora.web.http import first_of

    async def gateway_events():
        for event in events:
            yield event

    completion = Completion("chatcmpl-test", "ohlora")
    first, rest = await first_of(answer_events(gateway_events(), completion))
    lines = [chunk.decode() async for chunk in sse(first, rest, completion, include_usage=True)]
    content = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                      for line in lines if line.startswith("data: {") and json.loads(line[6:])["choices"])
    return content, lines


async def test_the_stream_ends_with_the_accepted_reply_after_a_rejected_attempt():
    E = gateway_pb2.ChatEvent
    usage = E(usage=gateway_pb2.Usage(prompt_tokens=7, completion_tokens=5))
    retried = [E(reply_delta=" 안녕\ufffd"), E(reply_reset=llm_pb2.ReplyReset(attempt=1)), E(reply_delta=" 안녕!"),
               E(reply_final=" 안녕! 반가워"), usage]
    content, lines = await streamed_content(retried)
    assert content == " 안녕\ufffd\n\n 안녕! 반가워", "nothing of the retry is streamed; the accepted reply ends the text"
    assert lines[-1] == "data: [DONE]\n\n" and '"total_tokens": 12' in lines[-2]
    cleaned = [E(reply_delta=" 안녕"), E(reply_delta="! 반가"), E(reply_final=" 안녕! 반가워"), usage]
    assert (await streamed_content(cleaned))[0] == " 안녕! 반가워", "the rest of a reply that continues what was sent"
