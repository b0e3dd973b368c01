"""The decoding loop: a batch of rows, one forward pass per step, each row growing by its own tokens.

Why not transformers' generate(), which the engine used before:
- A row whose answer comes from a fixed set (the expression's "(눈 X, 입 Y, 고개 돌림 Z)", ohlora.llm.answers) has
  stretches no choice can change. This loop writes such a stretch in the same forward pass as the token before it,
  where generate() spends a pass on every token. Rows of one batch then grow by different numbers of tokens in a
  step: a row's shorter step is padded on its left and the attention mask hides the padding, as it hides a
  prompt's left padding; each row's positions count its own tokens only.
- A finished row leaves the batch (its cache rows go), where generate() keeps computing it until the last row
  ends. A turn's memory extraction (a few tokens, on its own adapter) shares the reply's batch; on `mini` the
  reply decoded about 30 % slower to its end beside it (AVX2-capped fp32, a probe). Once the extraction is done,
  the reply's steps are the bare base's again.
- A row with a calibrated opening (the memory's "[" or nothing, ohlora.llm.task.Opening) has its first token
  decided by a threshold on the model's probability, not drawn; its nothing is then written like an answer.
- A reply to a turn that carries a recalled memory has the memory's words nudged (Mention): a bias on the token
  that starts or continues one of them, until the row has said one.
- A request that arrives while a batch runs joins it: its prompt gets a pass of its own, on a cache of its own
  that then joins the batch's (left-padded, like a prompt), so it waits one step, not for the whole batch.
Everything else is what generate() did for the engine: a key/value cache, last-position logits, float32 scores
through the guards and the row sampler, greedy on what they leave.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, LogitsProcessor

from ohlora.llm.answers import AnswerNode, AnswerTrie

# Sampling defaults of the original's transformers version (top-k 50, no top-p cut).
TOP_K = 50


class RowSampler(LogitsProcessor):
    """Samples each row's next token (its own temperature, top-k) and leaves only that token possible.

    The decoding loop then takes the best, that token. Why not sample the whole row: torch.multinomial over the whole
    vocabulary draws one random number per token, ~1.5 ms per row per step on a CPU for a 49k vocabulary
    (12 ms a step for 8 rows, a tenth of a batched SmolLM2 step, growing with the batch). Drawing among
    the top-k alone costs microseconds and gives the same distribution: temperature, then top-k, then
    softmax, as transformers' own warpers do. Temperature 0 means greedy for that row.
    """

    def __init__(self, temperatures: list[float], top_k: int = TOP_K,
                 generators: list[torch.Generator | None] | None = None) -> None:
        self.temperatures = torch.tensor(temperatures, dtype=torch.float32).unsqueeze(1)
        self.greedy = self.temperatures.squeeze(1) <= 0
        self.top_k = top_k
        self.generators = generators if generators and any(g is not None for g in generators) else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = min(self.top_k, scores.shape[-1])
        top, candidates = scores.float().topk(k, dim=-1)  # sorted, best first
        temperatures = self.temperatures.to(scores.device).clamp_min(1e-5)
        probs = torch.softmax(top / temperatures, dim=-1)
        if self.generators is None:
            choice = torch.multinomial(probs, 1)
        else:  # seeded rows: each draws from its own generator, whatever else is in the batch
            choice = torch.cat([torch.multinomial(probs[row].cpu(), 1, generator=g).to(probs.device) for row, g in
                                enumerate(self.generators)]).unsqueeze(1)
        choice[self.greedy.to(scores.device)] = 0
        chosen = candidates.gather(-1, choice)
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(-1, chosen, 0.0)


def opening_probability(logits: torch.Tensor, token: int) -> float:
    """The model's probability of `token` next, at temperature 1 over its output vocabulary, before any guard:
    what `ohlora train-calibrate` measures and what a row's opening is decided on."""
    return float(torch.softmax(logits.float(), dim=-1)[token])


@dataclass(frozen=True)
class OpeningRule:
    """A calibrated opening as token ids: at or above `threshold` on `token`, the answer starts with one of `opened`'s
    openings and goes on freely; below, it is the single answer of `otherwise`."""

    token: int
    threshold: float
    opened: AnswerTrie  # prefixes
    otherwise: AnswerTrie


@dataclass(frozen=True)
class Mention:
    """Words a reply is nudged to say (a recalled memory's value: GenerationSettings.mention), as token paths.

    Until the row has written one of the paths whole, `bias` is added to the logit of the token that goes on with
    the path the row's last tokens have begun, or, where none is begun, to each path's first token. A nudge, not a
    constraint: the model can still end a word elsewhere (a Korean word's first token is often a byte piece that
    many syllables share, and writing the rest without a choice would turn the model's "내일" into the memory's
    "대전").
    """

    paths: tuple[tuple[int, ...], ...]
    bias: float

    def said(self, generated: list[int]) -> bool:
        return any(generated[i: i + len(p)] == list(p) for p in self.paths for i in range(len(generated) - len(p) + 1))

    def nudge(self, generated: list[int], scores: torch.Tensor) -> None:
        """Adds the bias to the next tokens in `scores` (one row's); a token the guards ruled out stays out."""
        going_on = {path[k] for path in self.paths for k in range(min(len(path) - 1, len(generated)), 0, -1)
                    if generated[-k:] == list(path[:k])}
        following = going_on or {path[0] for path in self.paths}
        scores[torch.tensor(sorted(following), device=scores.device)] += self.bias


@dataclass
class DecodeRow:
    """One row of a batch: its prompt, budget, sampling and adapter, its answer set if any, and what it wrote."""

    prompt: list[int]
    max_new: int
    temperature: float = 0.0
    generator: torch.Generator | None = None  # set under llm.seed
    adapter: str | None = None
    answers: AnswerTrie | None = None
    generated: list[int] = field(default_factory=list)
    node: AnswerNode | None = None  # where the row is among its answers' token paths
    feed: list[int] = field(default_factory=list)  # the tokens the next forward pass reads for this row
    opening: OpeningRule | None = None  # decided on the first pass's logits, then dropped
    mention: Mention | None = None  # dropped once the row has said it
    no_repeat_ngram: int = 0  # where above 0: no run of this many tokens twice in what the row writes

    @property
    def complete(self) -> bool:
        return self.node is not None and self.node.complete

    def start(self) -> None:
        """The first pass reads the prompt, and the opening the row's answers share (if it has an answer set)."""
        if self.answers is not None:
            self.node = self.answers.root
            self.write([])
        self.feed = self.prompt + self.feed

    def write(self, tokens: list[int]) -> None:
        """Appends tokens, then the stretch of the answer set that follows them with no choice left."""
        if self.node is not None:
            for token in tokens:
                self.node = self.node.children.get(token, self.node)  # an end-of-text token leaves the node
            run, self.node = self.node.forced()
            tokens = tokens + run[: max(0, self.max_new - len(self.generated) - len(tokens))]
            if self.answers is not None and self.answers.prefixes and self.node.complete:
                self.node = None  # a whole opening is written: the rest is the model's
        self.generated += tokens
        self.feed = tokens
        if self.mention is not None and self.mention.said(self.generated):
            self.mention = None

    def open(self, logits: torch.Tensor) -> None:
        """Decides the opening on the first pass's logits: the row is then on its openings' paths, or on `otherwise`."""
        assert self.opening is not None and not self.generated
        rule, self.opening = self.opening, None
        self.answers = rule.opened if opening_probability(logits, rule.token) >= rule.threshold else rule.otherwise
        self.node = self.answers.root

    def repeating(self) -> list[int]:
        """The tokens that would write a run of `no_repeat_ngram` tokens the row has already written.

        Only the row's own text counts (a reply may say the user's words back once). At low temperatures a small
        model loops ("ㅋㅋㅋㅋ…" to its token budget, "오늘은 뭐 했어? 오늘은 뭐 했어?"): the ban makes it go on.
        """
        n = self.no_repeat_ngram
        if n <= 0 or len(self.generated) < n:
            return []
        tail = self.generated[len(self.generated) - n + 1:]
        return sorted({self.generated[i + n - 1] for i in range(len(self.generated) - n + 1)
                       if self.generated[i: i + n - 1] == tail})

    def allowed(self, end_ids: set[int]) -> list[int]:
        assert self.node is not None
        return [*self.node.children, *(end_ids if self.node.end else ())]


# Decides after each step which rows are done (end of text, budget, stop strings, cancelled, complete answer)
# and streams their text: the engine's _BatchMonitor.
Monitor = Callable[[list[DecodeRow]], list[bool]]
# Requests that arrived while the batch runs, as rows to join it; told how many rows are running.
Admit = Callable[[int], list[DecodeRow]]
# Selects the rows' adapters for the forward passes within it, and gives the keyword arguments they need
# (peft's `adapter_names`, where adapters cannot be stacked): the engine's _adapters_of.
AdapterScope = Callable[[list[DecodeRow]], AbstractContextManager[dict[str, object]]]


def _cache_argument(model: torch.nn.Module) -> str:
    """transformers renamed `past_key_values` to `cache` within 5.x; the base's forward says which it takes."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _constrain(rows: list[DecodeRow], raw: torch.Tensor, scores: torch.Tensor, end_ids: set[int]) -> None:
    """Leaves a row with an answer set only the tokens that keep to one of its answers, at the model's scores."""
    for index, row in enumerate(rows):
        if row.node is None:
            continue
        allowed = torch.tensor(row.allowed(end_ids), device=scores.device)
        kept = raw[index, allowed]
        scores[index] = float("-inf")
        # A model whose output vocabulary lacks every allowed token still answers from the set.
        scores[index, allowed] = torch.zeros_like(kept) if torch.isinf(kept).all() else kept


def _merge(cache: DynamicCache, mask: torch.Tensor, joined: DynamicCache, joined_mask: torch.Tensor
           ) -> torch.Tensor:
    """Appends the joined rows' cache to the batch's (the shorter side left-padded with zeros the mask hides)."""
    length = max(mask.shape[1], joined_mask.shape[1])

    def padded(tensor: torch.Tensor, dim: int) -> torch.Tensor:
        missing = length - tensor.shape[dim]
        if not missing:
            return tensor
        shape = list(tensor.shape)
        shape[dim] = missing
        return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

    for layer, new in zip(cache.layers, joined.layers):
        layer.keys = torch.cat([padded(layer.keys, 2), padded(new.keys, 2)])
        layer.values = torch.cat([padded(layer.values, 2), padded(new.values, 2)])
    return torch.cat([padded(mask, 1), padded(joined_mask, 1)])


def _trim(cache: DynamicCache, mask: torch.Tensor) -> torch.Tensor:
    """Drops the cache's leading columns that no row attends to any more (rows that left, padding).

    A batch that takes newcomers can run for as long as requests keep coming, and every pass adds a column for
    every row: without this the cache's length would grow with the batch's age, not with its rows' length.
    """
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else mask.shape[1]
    if start == 0:
        return mask
    for layer in cache.layers:
        layer.keys = layer.keys[:, :, start:]
        layer.values = layer.values[:, :, start:]
    return mask[:, start:]


class _Passes:
    """Forward passes over a cache: rows' pending tokens in, their next tokens chosen and written."""

    def __init__(self, model: torch.nn.Module, pad_id: int, end_ids: set[int], guards: list[LogitsProcessor]) -> None:
        self.model = model
        self.pad_id = pad_id
        self.end_ids = end_ids
        self.guards = guards
        self.device = next(model.parameters()).device
        self.cache_argument = _cache_argument(model)
        self.count = 0

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.model.config)

    def step(self, batch: list[DecodeRow], cache: DynamicCache, mask: torch.Tensor, kwargs: dict[str, object]
             ) -> torch.Tensor:
        """One forward pass for `batch` (in cache order); returns the mask grown by the pass."""
        width = max(len(row.feed) for row in batch)
        step = torch.tensor([[self.pad_id] * (width - len(r.feed)) + r.feed for r in batch], device=self.device)
        fresh = torch.tensor([[0] * (width - len(r.feed)) + [1] * len(r.feed) for r in batch], device=self.device)
        mask = torch.cat([mask, fresh], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)[:, -width:]
        out = self.model(input_ids=step, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                         **{self.cache_argument: cache}, **kwargs)
        self.count += 1
        scores = out.logits[:, -1, :].to(dtype=torch.float32)
        for index, row in enumerate(batch):
            if row.opening is not None:
                row.open(scores[index])
        raw = scores.clone() if any(r.node is not None for r in batch) else scores
        length = max(len(r.prompt) + len(r.generated) for r in batch)
        sequences = torch.tensor([[self.pad_id] * (length - len(r.prompt) - len(r.generated)) + r.prompt + r.generated
                                  for r in batch], device=self.device)
        for guard in self.guards:
            scores = guard(sequences, scores)
        for index, row in enumerate(batch):
            if row.mention is not None:
                row.mention.nudge(row.generated, scores[index])
            if banned := row.repeating():
                scores[index, torch.tensor(banned, device=scores.device)] = float("-inf")
        _constrain(batch, raw, scores, self.end_ids)  # a fixed answer's paths are whole texts: no guard needed
        sampler = RowSampler([r.temperature for r in batch], generators=[r.generator for r in batch])
        for row, token in zip(batch, sampler(sequences, scores).argmax(-1).tolist()):
            row.write([token])
        return mask


def decode(
    model: torch.nn.Module,
    rows: list[DecodeRow],
    *,
    pad_id: int,
    end_ids: set[int],
    guards: list[LogitsProcessor],
    monitor: Monitor,
    adapters_of: AdapterScope,
    admit: Admit = lambda running: [],
) -> int:
    """Runs the batch until the monitor says every row is done; returns the number of forward passes.

    Rows that `admit` hands over between two passes join the batch (and `rows`, for the monitor): their prompts
    get a forward pass of their own, on a cache of their own that then joins the batch's, so a request that
    arrives while a long reply decodes waits one step, not for the whole reply, and the running rows are not
    padded to a prompt's width.
    """
    passes = _Passes(model, pad_id, end_ids, guards)
    device = passes.device
    cache = passes.new_cache()
    for row in rows:
        row.start()
    active = list(range(len(rows)))  # the rows still in the batch, in cache order
    mask = torch.zeros((len(rows), 0), dtype=torch.long, device=device)
    done = monitor(rows)
    batch: list[DecodeRow] = []  # empty: the rows changed, their adapters are chosen again
    with contextlib.ExitStack() as scope:
        while not all(done):
            if passes.count and (joined := admit(sum(not d for d in done))):
                scope.close()
                batch = []
                for row in joined:
                    row.start()
                joined_cache = passes.new_cache()
                with adapters_of(joined) as kwargs:
                    joined_mask = passes.step(joined, joined_cache, mask.new_zeros((len(joined), 0)), kwargs)
                mask = _merge(cache, mask, joined_cache, joined_mask)
                active += range(len(rows), len(rows) + len(joined))
                rows += joined
                done = monitor(rows)
                if all(done):
                    break
            if len(active) > sum(not done[i] for i in active):  # finished rows leave the batch
                keep = [n for n, i in enumerate(active) if not done[i]]
                mask = mask[keep]
                if passes.count:
                    cache.batch_select_indices(torch.tensor(keep, device=device))
                    mask = _trim(cache, mask)
                active = [active[n] for n in keep]
                scope.close()
                batch = []
            if not batch:
                batch = [rows[i] for i in active]
                kwargs = scope.enter_context(adapters_of(batch))
            mask = passes.step(batch, cache, mask, kwargs)
            done = monitor(rows)
    return passes.count
