"""The `tiny` preset: models built from a config in seconds, with random weights.

For tests and CI only: a GPT-NeoX base (the original's architecture, a few hundred
thousand parameters) with a byte-level BPE tokenizer trained here on Korean and
English text, one LoRA adapter per task on `query_key_value` (as the original), and
a two-layer BERT sentence embedder. The output is noise; the plumbing is real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

# Text the tokenizers learn from, written for this project.
CORPUS = [
    "로라야 오늘 뭐 해? 나는 집에서 영화 볼 거야!",
    "(답변 시작) ### 답변: 응 좋아! (답변 종료) <|endoftext|>",
    "(오로라 답변 요약) 주말 계획 이야기 (사용자 질문) 너는 주말에 뭐 할 거야?",
    "[오늘 일정: 친구랑 카페 가기] 오늘 뭐 입고 나가지?",
    "(눈 크게, 입 보통, 고개 돌림 없음) (눈 작게, 입 아주 크게, 고개 돌림 많이)",
    "[상태: 시험 끝남] [좋아하는 음식: 떡볶이] [내일 날씨: 맑음]",
    "안녕하세요 반가워요 고마워 미안해 사랑해 재미있다 배고파 졸려",
    "The quick brown fox jumps over the lazy dog. Hello, how are you today?",
    "오로라는 샘올대학교 인공지능학과 3학년이고 MBTI 는 ENTJ 야 😊 ✨ 🌹",
    "0123456789 ,.!?:;()[]{}<>-_'\" 가나다라마바사아자차카타파하",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TASKS = ("message", "memory", "summary", "pose")


@dataclass(frozen=True)
class TinyPreset:
    base: Path
    adapters: dict[str, Path]
    embedder: Path

    def config_toml(self, dialect: str = "original") -> str:
        """A config file that points every task at these models."""
        lines = [
            "[llm]",
            f'base_model = "{self.base}"',
            f'dialect = "{dialect}"',
            'dtype = "float32"',
            'device = "cpu"',
            "",
            "[embedder]",
            f'model = "{self.embedder}"',
            "threshold = 0.9",
            'device = "cpu"',
        ]
        for task, path in self.adapters.items():
            lines += ["", f"[llm.tasks.{task}]", f'adapter = "{path}"']
        return "\n".join(lines) + "\n"


def build_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=2000, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    # The fine-tuning examples are part of the corpus, so Korean words become whole tokens.
    examples = [f"{i} (답변 시작){o} (답변 종료)" for pairs in TRAINING.values() for i, o in pairs]
    tok.train_from_iterator(CORPUS + examples, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", additional_special_tokens=specials[1:]
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_base(out: Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tokenizer = build_tokenizer(out)
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden * 2,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Larger than the default 0.02, so a short fine-tune can make the next-token distribution peaked
        # enough for sampling at the original's temperatures (with 0.02 the logits stay near uniform).
        initializer_range=0.1,
    )
    GPTNeoXForCausalLM(config).save_pretrained(out)
    return out


# A few examples per task in the original's fine-tuning format, written for this project. Fine-tuning the
# tiny adapters on them makes end-to-end tests meaningful: facts get extracted, summaries written.
TRAINING = {
    "message": [
        ("나 내일 시험이야", " 헉 진짜? 시험 잘 볼 거야 화이팅! 💪"),
        ("[상태: 시험 준비] 로라야 나 떨려", " 시험 준비 열심히 했잖아! 넌 잘할 거야 😊"),
        ("로라야 안녕", " 안녕! 오늘 하루 어땠어? 😊"),
        ("(오로라 답변 요약) 반갑게 인사하고 하루 안부 물음 (사용자 질문) 로라야 뭐 해?", " 나 지금 과제하고 있어! 너는?"),
        ("로라야 뭐 해?", " 나 지금 과제하고 있어! 너는?"),
    ],
    "memory": [
        ("나 내일 시험이야", " [상태: 시험 준비]"),
        ("(오로라 답변 요약) 반갑게 인사하고 하루 안부 물음 (사용자 질문) 나 내일 시험이야", " [상태: 시험 준비]"),
        ("로라야 안녕", ""),
        ("로라야 뭐 해?", ""),
        ("(오로라 답변 요약) 반갑게 인사하고 하루 안부 물음 (사용자 질문) 로라야 뭐 해?", ""),
        ("[상태: 시험 준비] 로라야 나 떨려", ""),
    ],
    "summary": [
        ("로라야 안녕 (오로라 답변) 안녕! 오늘 하루 어땠어? 😊", " 반갑게 인사하고 하루 안부 물음"),
        ("나 내일 시험이야 (오로라 답변) 헉 진짜? 시험 잘 볼 거야 화이팅! 💪", " 내일 시험 잘 보라고 응원함"),
        ("로라야 뭐 해? (오로라 답변) 나 지금 과제하고 있어! 너는?", " 오로라는 지금 과제 중"),
    ],
    "pose": [
        (" 안녕! 오늘 하루 어땠어? 😊", " (눈 크게, 입 크게, 고개 돌림 없음)"),
        (" 헉 진짜? 시험 잘 볼 거야 화이팅! 💪", " (눈 아주 크게, 입 크게, 고개 돌림 보통)"),
        (" 나 지금 과제하고 있어! 너는?", " (눈 보통, 입 보통, 고개 돌림 없음)"),
    ],
}


def _training_batch(tokenizer, examples: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded rows of "{input} (답변 시작){output} (답변 종료)<eos>"; loss only on the answer part."""
    rows = []
    for prompt, answer in examples:
        rows.append((tokenizer.encode(f"{prompt} (답변 시작)"), tokenizer.encode(f"{answer} (답변 종료)") + [tokenizer.eos_token_id]))
    width = max(len(p) + len(a) for p, a in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for k, (p, a) in enumerate(rows):
        input_ids[k, : len(p) + len(a)] = torch.tensor(p + a)
        labels[k, len(p) : len(p) + len(a)] = torch.tensor(a)
        attention[k, : len(p) + len(a)] = 1
    return input_ids, labels, attention


def build_adapter(base: Path, out: Path, seed: int, rank: int = 8, examples: list[tuple[str, str]] | None = None,
                  steps: int = 200) -> Path:
    """A LoRA adapter like the original's (query_key_value, gaussian init).

    With `examples`, it is fine-tuned on "{input} (답변 시작){output} (답변 종료)" (a real, short
    training run); without, its B matrices are randomised so it still changes outputs.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=rank, lora_alpha=16, lora_dropout=0.0, init_lora_weights="gaussian",
        target_modules=["query_key_value", "dense_h_to_4h", "dense_4h_to_h"], task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    if examples:
        input_ids, labels, attention = _training_batch(AutoTokenizer.from_pretrained(base), examples)
        optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
        peft_model.train()
        for _ in range(steps):
            peft_model(input_ids=input_ids, attention_mask=attention, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        peft_model.eval()
    else:
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    return out


def build_embedder(out: Path, seed: int = 0) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    hf_dir = out.parent / (out.name + "-hf")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    fast.save_pretrained(hf_dir)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=64)
    model = SentenceTransformer(
        modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean"), Normalize()], device="cpu"
    )
    model.save(str(out))
    return out


def build_tiny_preset(root: Path, trained: bool = False, hidden: int = 64, layers: int = 2) -> TinyPreset:
    """Random adapters, or (trained=True) adapters fine-tuned on TRAINING so the pipeline produces real output."""
    root.mkdir(parents=True, exist_ok=True)
    base = build_base(root / "base", hidden=hidden, layers=layers)
    adapters = {
        task: build_adapter(
            base, root / f"adapter-{task}", seed=10 + i, examples=TRAINING[task] if trained else None,
            steps=400,  # sharp enough for sampling (the pose task samples at T=1.5)
        )
        for i, task in enumerate(TASKS)
    }
    return TinyPreset(base=base, adapters=adapters, embedder=build_embedder(root / "embedder"))
