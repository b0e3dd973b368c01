"""`llm.output_vocabulary = "korean"`: which pieces are kept, and an output layer over them that changes nothing else."""

from __future__ import annotations

import asyncio

import pytest
import torch

from ohlora.llm.engine import EngineConfig, LLMEngine
from ohlora.llm.vocabulary import RestrictedHead, korean_piece, korean_token_ids


@pytest.mark.parametrize("text,kept", [
    ("ㅋ", True), (" 가", True), ("했어", True), ("?", True), (" OK", True), ("3", True), ("✨", True), ("😊", True),
    ("…", True), ("～", True), (" world", False), ("Hello", False), ("下午", False), ("こんにちは", False),
    ("Привет", False), ("café", False), ("\t\t", False), ("    ", False),
])
def test_a_piece_is_kept_when_a_korean_reply_may_contain_it(text: str, kept: bool):
    assert korean_piece(text.encode()) is kept


def test_byte_pieces_are_kept_for_hangul_and_emoji_but_not_for_chinese():
    assert korean_piece(" 가".encode()[:-2])  # a space and a syllable's first byte: how Qwen2.5 starts many words
    assert korean_piece("😊".encode()[:2]) and korean_piece("😊".encode()[2:])  # an emoji split in two tokens
    assert not korean_piece("下".encode()[:1])
    assert not korean_piece("é".encode()[:1])  # Latin, Cyrillic, Greek... start with a two-byte lead


def test_a_tokenizer_that_is_not_byte_level_bpe_is_refused(tiny_models):
    from transformers import AutoTokenizer

    wordpiece = AutoTokenizer.from_pretrained(str(tiny_models.embedder))  # the tiny sentence embedder's BERT
    with pytest.raises(ValueError, match="byte-level BPE"):
        korean_token_ids(wordpiece)


@pytest.fixture(scope="module")
def engines(tiny_models):
    config = dict(base_model=str(tiny_models.base), dtype="float32", device="cpu")
    return LLMEngine.load(EngineConfig(**config)), LLMEngine.load(EngineConfig(**config, output_vocabulary="korean"))


def test_the_restricted_head_gives_the_same_logits_for_kept_tokens_and_minus_infinity_for_the_rest(engines):
    full, korean = engines
    head = korean.model.get_output_embeddings()
    assert isinstance(head, RestrictedHead)
    keep = korean_token_ids(korean.tokenizer)
    assert 0 < len(keep) < len(korean.tokenizer)
    ids = torch.tensor([korean.tokenizer.encode("로라야 오늘 뭐 해?")])
    with torch.inference_mode():
        expected = full.model(ids).logits
        got = korean.model(ids).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got[..., keep], expected[..., keep])
    dropped = sorted(set(range(got.shape[-1])) - set(keep))
    assert torch.isneginf(got[..., dropped]).all()


def test_generation_samples_only_kept_tokens(engines):
    full, korean = engines
    keep = set(korean_token_ids(korean.tokenizer))
    ids = torch.tensor([korean.tokenizer.encode("The quick brown fox 로라야")])

    def sampled(engine: LLMEngine) -> set[int]:
        torch.manual_seed(0)
        with torch.inference_mode():
            out = engine.model.generate(ids, do_sample=True, temperature=2.0, top_k=0, max_new_tokens=64,
                                        min_new_tokens=64, pad_token_id=0)
        return set(out[0, ids.shape[1]:].tolist())

    assert sampled(full) - keep, "the full vocabulary samples dropped tokens too (else this test proves nothing)"
    assert sampled(korean) <= keep


async def test_the_engine_with_the_korean_vocabulary_generates_through_its_syllable_guard(engines):
    """Hot sampling on the random tiny model hits unfinished syllables often: every request still ends with text,
    and the guard only ever leaves pieces possible, never an empty choice."""
    from ohlora.llm.task import GenerationSettings
    from ohlora.llm.vocabulary import HangulSyllableGuard

    _, korean = engines
    assert [type(g) for g in korean.guards] == [HangulSyllableGuard]
    korean.start()
    try:
        settings = GenerationSettings(temperature=2.0, max_new_tokens=32)
        outs = await asyncio.gather(*(collect(korean, f"로라야 {n} 오늘 뭐 해?", settings) for n in range(8)))
    finally:
        await korean.stop()
    assert all(o.done and o.new_tokens > 0 for o in outs)


async def collect(engine: LLMEngine, prompt: str, settings):
    last = None
    async for update in engine.for_adapter(None).generate(prompt, settings):
        last = update
    return last
