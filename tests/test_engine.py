"""The shared LLM engine on a tiny GPT-NeoX with real LoRA adapters, in-process."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from ohlora.errors import QueueFull
from ohlora.llm.engine import EngineConfig, LLMEngine
from ohlora.llm.task import ChatPrompt, GenerationSettings

GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
async def engine(tiny_models):
    config = EngineConfig(
        base_model=str(tiny_models.base),
        adapters={"message": str(tiny_models.adapters["message"]), "pose": str(tiny_models.adapters["pose"])},
        dtype="float32",
        device="cpu",
        max_batch_size=8,
        max_queue=16,
        batch_window_ms=20.0,
    )
    eng = LLMEngine.load(config)
    eng.start()
    yield eng
    await eng.stop()


async def final(engine, prompt, settings, adapter=None):
    last = None
    async for update in engine.for_adapter(adapter).generate(prompt, settings):
        last = update
    return last


async def test_concurrent_requests_of_different_adapters_share_one_batch(engine):
    engine.recent_batches.clear()
    jobs = [final(engine, f"로라야 {i}", GREEDY, "message") for i in range(4)]
    jobs += [final(engine, f"안녕 {i}", GREEDY, "pose") for i in range(2)]
    jobs += [final(engine, "그냥 베이스", GREEDY, None)]
    results = await asyncio.gather(*jobs)
    assert all(r.done for r in results)
    assert list(engine.recent_batches) == [("base+message+pose", 7)]


@pytest.mark.parametrize("path", ["stacked", "peft adapter_names"])
async def test_each_row_of_a_mixed_batch_gets_its_own_adapters_output(engine, path):
    """The same prompt under three adapters in one batch must give what each gives alone, on both mixing paths."""
    stacked = engine.stacked
    assert stacked is not None, "the tiny adapters are plain LoRA: they must be stacked"
    if path != "stacked":
        engine.stacked = None
    try:
        prompts = [("로라야 안녕", "message"), ("로라야 안녕", "pose"), ("로라야 안녕", None), ("오늘 뭐 해?", "pose")]
        alone = [await final(engine, p, GREEDY, a) for p, a in prompts]
        engine.recent_batches.clear()
        together = await asyncio.gather(*(final(engine, p, GREEDY, a) for p, a in prompts))
    finally:
        engine.stacked = stacked
    assert list(engine.recent_batches) == [("base+message+pose", 4)]
    assert [t.text for t in together] == [a.text for a in alone]
    assert len({a.text for a in alone[:3]}) == 3, "the adapters really differ on this prompt"
    # Rows are answered as they finish, inside the batch: its stacked layers are restored when generate returns.
    patched = lambda: [m for m in engine.model.modules() if "forward" in vars(m)]  # noqa: E731
    for _ in range(500):
        if not patched():
            break
        await asyncio.sleep(0.01)
    assert not patched(), "a batch left a patched forward behind"


async def test_batches_hold_one_adapter_when_mixing_is_off(engine):
    engine.mixed_adapter_batches = False
    try:
        engine.recent_batches.clear()
        jobs = [final(engine, f"로라야 {i}", GREEDY, "message") for i in range(3)]
        jobs += [final(engine, f"안녕 {i}", GREEDY, "pose") for i in range(2)]
        await asyncio.gather(*jobs)
        assert list(engine.recent_batches) == [("message", 3), ("pose", 2)]
    finally:
        engine.mixed_adapter_batches = True


async def test_requests_arriving_during_a_batch_join_it(engine):
    """Requests sent while a long one decodes join its batch between two steps, on their own adapters, and get
    what they get alone; the long one is still running when they are answered."""
    # The second is longer than the running row's prompt and tokens so far: the running row's cache is padded to
    # it when the newcomers' cache joins; the two short newcomers are left-padded beside it in their own prefill.
    late = [("늦은 요청 0", "message"), ("늦은 요청 1 " + "오늘 정말 긴 하루였어 " * 12, "pose"), ("늦은 요청 2", None)]
    alone = [await final(engine, p, GREEDY, a) for p, a in late]
    engine.recent_batches.clear()
    finished: list[str] = []

    async def run(prompt: str, settings: GenerationSettings, adapter: str | None):
        update = await final(engine, prompt, settings, adapter)
        finished.append(prompt)
        return update

    first = asyncio.create_task(run("첫 요청", GenerationSettings(temperature=0.0, max_new_tokens=60), "message"))
    while not engine.recent_batches:
        await asyncio.sleep(0.001)
    together = await asyncio.gather(*(run(p, GREEDY, a) for p, a in late))
    long = await first
    assert list(engine.recent_batches) == [("base+message+pose", 4)]
    assert finished[-1] == "첫 요청" and long.new_tokens == 60, "the late requests were answered inside the long one's batch"
    assert [t.text for t in together] == [a.text for a in alone]
    assert len({a.text for a in alone}) == 3


async def test_requests_sent_together_share_a_batch(engine):
    """A turn sends its reply and memory extraction a few milliseconds apart: they must share one batch."""
    engine.recent_batches.clear()
    first = asyncio.create_task(final(engine, "답장 요청", GREEDY, "message"))
    await asyncio.sleep(0.005)
    second = asyncio.create_task(final(engine, "기억 요청", GREEDY, "message"))
    await asyncio.gather(first, second)
    assert list(engine.recent_batches) == [("message", 2)]


async def test_a_short_row_is_answered_before_its_batch_ends(engine):
    engine.recent_batches.clear()
    finished: list[str] = []

    async def run(name: str, settings: GenerationSettings) -> None:
        update = await final(engine, f"{name} 요청", settings, "message")
        finished.append(f"{name}:{update.new_tokens}")

    long, short = GenerationSettings(temperature=0.0, max_new_tokens=80), GenerationSettings(temperature=0.0, max_new_tokens=2)
    await asyncio.gather(run("long", long), run("short", short))  # long is row 0, short row 1 of one batch
    assert list(engine.recent_batches) == [("message", 2)]
    assert finished[0] == "short:2" and finished[1].startswith("long:"), finished
    assert int(finished[1].split(":")[1]) > 20, "the long row really ran on after the short one was answered"


async def test_batched_output_equals_single_output(engine):
    prompts = ["로라야", "로라야 오늘 뭐 먹었어? 나는 떡볶이", "안녕"]
    alone = [await final(engine, p, GREEDY, "message") for p in prompts]
    together = await asyncio.gather(*(final(engine, p, GREEDY, "message") for p in prompts))
    assert [a.text for a in alone] == [t.text for t in together]
    assert [a.new_tokens for a in alone] == [t.new_tokens for t in together]


async def test_adapters_change_outputs(engine):
    base = await final(engine, "로라야 안녕", GREEDY, None)
    message = await final(engine, "로라야 안녕", GREEDY, "message")
    pose = await final(engine, "로라야 안녕", GREEDY, "pose")
    assert len({base.text, message.text, pose.text}) == 3


async def test_per_row_budgets_and_total_token_limit(engine):
    short = GenerationSettings(temperature=0.0, max_new_tokens=3)
    total = GenerationSettings(temperature=0.0, max_total_tokens=10)
    prompt = "로라야 오늘"
    prompt_len = len(engine.encode_prompt(prompt))
    a, b, c = await asyncio.gather(
        final(engine, prompt, short, "message"), final(engine, prompt, GREEDY, "message"), final(engine, prompt, total, "message")
    )
    assert (a.new_tokens, b.new_tokens) == (3, 12)
    assert c.total_tokens == 10 and c.new_tokens == 10 - prompt_len
    assert b.text.startswith(a.text.rstrip("\ufffd")), "a cut may end inside a multi-byte character"


async def test_stop_string_ends_a_row(engine):
    full = await final(engine, "오로라 요약", GenerationSettings(temperature=0.0, max_new_tokens=30), "message")
    stop = full.text[4:6]
    assert len(stop) == 2 and full.text.index(stop) >= 1
    settings = GenerationSettings(temperature=0.0, max_new_tokens=30, stop_strings=(stop,))
    cut = await final(engine, "오로라 요약", settings, "message")
    assert stop in cut.text and cut.new_tokens < full.new_tokens
    assert full.text.startswith(cut.text)


async def test_streaming_updates_grow(engine):
    texts = []
    async for update in engine.for_adapter("message").generate("로라야", GREEDY, stream=True):
        texts.append(update.text)
    assert len(texts) >= 5
    assert all(texts[i + 1].startswith(texts[i].rstrip("\ufffd")) for i in range(len(texts) - 2))


async def test_chat_dialect_uses_the_chat_template(engine):
    ids = engine.encode_prompt(ChatPrompt(system="너는 오로라야", user="안녕"))
    text = engine.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n너는 오로라야<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    result = await final(engine, ChatPrompt(system="너는 오로라야", user="안녕"), GREEDY)
    assert result.done and result.new_tokens > 0


async def test_full_queue_is_refused(engine):
    engine.max_queue = 2
    engine.recent_batches.clear()
    try:
        long = GenerationSettings(temperature=0.0, max_new_tokens=40)
        running = asyncio.create_task(final(engine, "길게", long, "message"))
        while not engine.recent_batches or engine._waiting:
            await asyncio.sleep(0.001)
        waiting = [asyncio.create_task(final(engine, f"대기 {i}", GREEDY, "message")) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="queue is full"):
            await final(engine, "넘침", GREEDY, "message")
        await asyncio.gather(running, *waiting)
    finally:
        engine.max_queue = 16
    assert (await final(engine, "다시", GREEDY, "message")).done


def test_row_sampler_draws_from_temperature_then_top_k_and_greedy_rows_take_the_best():
    """The sampler replaces do_sample's full-vocabulary multinomial; its distribution must be the same."""
    import torch

    from ohlora.llm.decoding import RowSampler

    torch.manual_seed(0)
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.5, -1.0, -2.0]])
    scores = logits.repeat(3, 1)
    sampler = RowSampler([0.7, 0.0, 2.0], top_k=3)
    counts = torch.zeros(3, 6)
    for _ in range(4000):
        out = sampler(None, scores.clone())
        assert torch.isfinite(out).sum(dim=-1).tolist() == [1, 1, 1]
        counts[torch.arange(3), out.argmax(-1)] += 1
    assert counts[:, 3:].sum() == 0, "a token outside the top-k was drawn"
    assert counts[1].tolist() == [4000, 0, 0, 0, 0, 0], "temperature 0 is greedy"
    for row, temperature in ((0, 0.7), (2, 2.0)):
        expected = torch.softmax(logits[0, :3] / temperature, -1)
        assert torch.allclose(counts[row, :3] / 4000, expected, atol=0.03), (counts[row], expected)


async def test_a_seeded_engine_samples_the_same_text_alone_and_in_any_batch(engine):
    """llm.seed: a request's draws come from its own generator, so batching does not change what it says."""
    warm = GenerationSettings(temperature=1.0, max_new_tokens=16)
    engine.seed = 7
    try:
        alone = await final(engine, "로라야 뭐 해?", warm, "message")
        again = await final(engine, "로라야 뭐 해?", warm, "message")
        batched = await asyncio.gather(final(engine, "안녕 로라", warm, "pose"), final(engine, "로라야 뭐 해?", warm, "message"),
                                       final(engine, "오늘 날씨", warm, None))
        # A task's retry (the same prompt) samples anew; the same attempt again repeats itself.
        retries = [(await final(engine, "로라야 뭐 해?", replace(warm, attempt=n), "message")).text for n in (2, 3, 2)]
    finally:
        engine.seed = None
    unseeded = {(await final(engine, "로라야 뭐 해?", warm, "message")).text for _ in range(4)}
    assert alone.text == again.text == batched[1].text
    assert len({alone.text, retries[0], retries[1]}) == 3 and retries[2] == retries[0]
    assert len(unseeded) > 1, "without a seed, temperature 1 really samples (else this test could not fail)"


def test_a_row_with_no_repeat_ngram_never_writes_a_run_twice(tiny_models):
    """The real decode loop on the tiny base, greedy: it loops without the ban, never repeats a 3-token run with it."""
    import contextlib

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ohlora.llm.decoding import DecodeRow, decode

    model = AutoModelForCausalLM.from_pretrained(tiny_models.base, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    prompts = [tokenizer.encode(text) for text in ("로라야 안녕", "오늘 뭐 했어?", "ㅋㅋㅋㅋㅋ", "고마워")]

    def runs_of(rows: list[DecodeRow]) -> list[list[tuple[int, ...]]]:
        return [[tuple(r.generated[i: i + 3]) for i in range(len(r.generated) - 2)] for r in rows]

    def generate(no_repeat_ngram: int) -> list[DecodeRow]:
        rows = [DecodeRow(list(p), max_new=40, no_repeat_ngram=no_repeat_ngram) for p in prompts]
        with torch.inference_mode():
            decode(model, rows, pad_id=tokenizer.pad_token_id or 0, end_ids=set(), guards=[],
                   monitor=lambda rs: [len(r.generated) >= r.max_new for r in rs],
                   adapters_of=lambda batch: contextlib.nullcontext({}))
        return rows

    free, banned = generate(0), generate(3)
    assert any(len(set(runs)) < len(runs) for runs in runs_of(free)), "greedy tiny model loops (else this proves nothing)"
    assert all(len(set(runs)) == len(runs) for runs in runs_of(banned)), [r.generated for r in banned]
    assert all(len(r.generated) == 40 for r in banned), "the ban steers the row, it does not end it"


def test_repeating_names_the_tokens_that_would_close_a_written_run():
    from ohlora.llm.decoding import DecodeRow

    row = DecodeRow(prompt=[1, 2], max_new=20, no_repeat_ngram=3, generated=[5, 6, 7, 5, 6, 9, 5, 6])
    assert row.repeating() == [7, 9]  # "5 6" was followed by 7 and by 9; the prompt's tokens do not count
    assert DecodeRow(prompt=[5, 6, 7], max_new=20, no_repeat_ngram=3, generated=[5, 6]).repeating() == []
    assert DecodeRow(prompt=[], max_new=20, generated=[5, 6, 7, 5, 6]).repeating() == [], "off by default"
