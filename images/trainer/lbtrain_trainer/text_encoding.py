"""Text to token ids, with character offsets, through one fast-tokenizer code path.

Small text models build their own WordPiece vocabulary from the model run's data (nothing is
downloaded); production models use the fast tokenizer saved next to their pretrained weights.
Both are a ``tokenizers.Tokenizer`` underneath (a transformers fast tokenizer exposes its
``backend_tokenizer``), so encoding, padding, truncation and the offset mapping NER needs are
the same code for both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_vocabulary(words: Counter[str], vocab_size: int) -> dict[str, int]:
    """A WordPiece vocabulary for ``words`` (normalised, pre-tokenised), in a fixed order.

    The special tokens, then every character as a word start and as a ``##`` continuation
    (so that any word of these characters can be spelled), then the most frequent whole
    words, up to ``vocab_size``; ties go by spelling. Unlike the ``tokenizers`` trainer, whose
    merges and numbering follow hash-map order and change from process to process, the same
    texts always give the same vocabulary: every torchrun rank prepares its own copy, and a
    seeded run must train the same model twice.
    """
    starts: Counter[str] = Counter()
    continuations: Counter[str] = Counter()
    for word, count in words.items():
        starts[word[0]] += count
        for char in word[1:]:
            continuations["##" + char] += count
    budget = max(0, vocab_size - len(SPECIAL_TOKENS))
    pieces = sorted((starts + continuations).items(), key=lambda kv: (-kv[1], kv[0]))[:budget]
    vocab = [*SPECIAL_TOKENS, *sorted(token for token, _ in pieces)]
    known = set(vocab)
    for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
            known.add(word)
    return {token: i for i, token in enumerate(vocab)}


class WordCounter:
    """Counts the words of texts as the WordPiece tokenizer will split them, one at a time (so
    ``prepare`` need not hold every text)."""

    def __init__(self) -> None:
        from tokenizers import normalizers, pre_tokenizers

        self.normalizer = normalizers.BertNormalizer(lowercase=True)
        self.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self.words: Counter[str] = Counter()

    def add(self, text: str) -> None:
        for word, _ in self.pre_tokenizer.pre_tokenize_str(self.normalizer.normalize_str(text)):
            self.words[word] += 1


def train_wordpiece(texts: Iterable[str], vocab_size: int, path: Path) -> None:
    """Build a lower-casing BERT-style WordPiece tokenizer for ``texts`` and save it."""
    counter = WordCounter()
    for text in texts:
        counter.add(text)
    save_wordpiece(counter, vocab_size, path)


def save_wordpiece(counter: WordCounter, vocab_size: int, path: Path) -> None:
    """Save the tokenizer whose vocabulary the counted words give."""
    from tokenizers import Tokenizer, decoders, models, processors

    normalizer, pre_tokenizer, words = counter.normalizer, counter.pre_tokenizer, counter.words
    tokenizer = Tokenizer(
        models.WordPiece(wordpiece_vocabulary(words, vocab_size), unk_token="[UNK]")
    )
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))


@dataclass
class Encoded:
    ids: list[list[int]]
    attention_mask: list[list[int]]
    # Both empty unless ``encode`` was asked for offsets:
    offsets: list[list[tuple[int, int]]]  # half-open character spans; (0, 0) for specials
    special: list[list[int]]  # 1 for special and padding tokens


class TextEncoder:
    """A fast tokenizer set up to pad and truncate to ``max_length``."""

    def __init__(self, tokenizer: Any, max_length: int, pad_id: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        if pad_id is None:
            pad_id = next(
                (i for t in ("[PAD]", "<pad>") if (i := tokenizer.token_to_id(t)) is not None), 0
            )
        self.pad_id = pad_id
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.enable_padding(pad_id=self.pad_id)

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    @staticmethod
    def from_file(path: Path, max_length: int) -> TextEncoder:
        from tokenizers import Tokenizer

        return TextEncoder(Tokenizer.from_file(str(path)), max_length)

    @staticmethod
    def from_pretrained(directory: Path, max_length: int, allow_download: bool) -> TextEncoder:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(directory), local_files_only=not allow_download)
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(f"{directory} has no fast tokenizer (tokenizer.json)")
        return TextEncoder(backend, max_length, hf.pad_token_id)

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    def encode(self, texts: Sequence[str], offsets: bool = True) -> Encoded:
        """Token ids and attention masks; with ``offsets``, also the character offsets and
        special-token masks (as Python lists: a DataLoader worker spends a few milliseconds a
        batch of 32 x 128 tokens building them, so classification, which never reads them,
        asks for none and gets empty lists)."""
        encodings = self.tokenizer.encode_batch(list(texts))
        encoded = Encoded(
            ids=[e.ids for e in encodings],
            attention_mask=[e.attention_mask for e in encodings],
            offsets=[],
            special=[],
        )
        if offsets:
            encoded.offsets = [[(int(s), int(t)) for s, t in e.offsets] for e in encodings]
            encoded.special = [[int(m) for m in e.special_tokens_mask] for e in encodings]
        return encoded
