from __future__ import annotations

import pytest
import torch
from transformers import CLIPTokenizer

from iclight.models.prompts import PromptEncoder, chunk_token_ids, join_chunks, repeat_to
from iclight.pipeline.standins import tiny_text_encoder, write_tokenizer

BOS, EOS = 1000, 1001


@pytest.mark.parametrize(
    ("n_tokens", "n_chunks"),
    [(0, 1), (5, 1), (75, 1), (76, 2), (150, 2), (151, 3), (300, 4)],
)
def test_chunk_counts_and_framing(n_tokens: int, n_chunks: int) -> None:
    ids = list(range(n_tokens))
    chunks = chunk_token_ids(ids, BOS, EOS)
    assert len(chunks) == n_chunks
    assert all(len(c) == 77 and c[0] == BOS for c in chunks)
    body = [t for c in chunks for t in c[1:] if t not in (EOS,)]
    assert body == ids  # every token kept, in order, none truncated


def test_short_chunk_is_padded_with_eos() -> None:
    chunk = chunk_token_ids([7, 8], BOS, EOS)[0]
    assert chunk[:4] == [BOS, 7, 8, EOS]
    assert chunk[4:] == [EOS] * 73


def test_empty_text_is_one_chunk_of_bos_and_eos() -> None:
    assert chunk_token_ids([], BOS, EOS) == [[BOS] + [EOS] * 76]


def test_full_chunk_has_no_padding() -> None:
    chunk = chunk_token_ids(list(range(75)), BOS, EOS)[0]
    assert chunk[-1] == EOS and chunk[-2] == 74


def test_repeat_cycles_and_truncates() -> None:
    x = torch.arange(3).reshape(3, 1, 1).float()
    assert repeat_to(x, 5).flatten().tolist() == [0, 1, 2, 0, 1]
    assert repeat_to(x, 2).flatten().tolist() == [0, 1]


def test_join_concatenates_along_tokens() -> None:
    x = torch.randn(3, 77, 8)
    joined = join_chunks(x)
    assert joined.shape == (1, 231, 8)
    assert torch.equal(joined[0, 77:154], x[1])


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> PromptEncoder:
    folder = tmp_path_factory.mktemp("tok")
    vocab = write_tokenizer(folder)
    torch.manual_seed(0)
    return PromptEncoder(CLIPTokenizer.from_pretrained(folder), tiny_text_encoder(vocab).eval())


@pytest.mark.parametrize(("text", "chunks"), [("", 1), ("x" * 75, 1), ("x" * 76, 2), ("x" * 300, 4)])
def test_encoder_chunks_real_tokenizer(encoder: PromptEncoder, text: str, chunks: int) -> None:
    assert len(encoder.token_chunks(text)) == chunks
    assert encoder.encode_text(text).shape == (chunks, 77, 32)


def test_pair_is_equal_length_and_cached(encoder: PromptEncoder) -> None:
    pos, neg = encoder("x" * 200, "")
    assert pos.shape == neg.shape == (1, 77 * 3, 32)
    # The single negative chunk repeats to fill three.
    assert torch.equal(neg[0, :77], neg[0, 77:154])
    assert encoder("x" * 200, "")[0] is pos


def test_cache_does_not_change_values(encoder: PromptEncoder) -> None:
    fresh = PromptEncoder(encoder.tokenizer, encoder.text_encoder, cache_size=0)
    a = fresh("light sun, best quality", "lowres")
    b = encoder("light sun, best quality", "lowres")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_long_prompt_is_chunked_without_the_tokenizers_overflow_warning(
    encoder: PromptEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    """The tokenizer warns that more than 77 tokens overflow CLIP; the chunks make that untrue."""
    fresh = PromptEncoder(type(encoder.tokenizer).from_pretrained(encoder.tokenizer.name_or_path), encoder.text_encoder)
    with caplog.at_level("WARNING"):
        assert len(fresh.token_chunks("x" * 300)) == 4
    assert "sequence length is longer" not in caplog.text


def test_pairs_encode_together_as_each_alone(encoder: PromptEncoder) -> None:
    """A shared batch's prompts in one pass of the text encoder: the embeddings of each alone."""
    long = " ".join(["light"] * 120)
    pairs = [("sun, best quality", "lowres"), (long, ""), ("sun, best quality", "lowres"), ("moon", long)]
    encoder._cache.clear()
    together = encoder.pairs(pairs)
    assert together[0] is together[2]  # the same pair, encoded once
    encoder._cache.clear()
    for (pos, neg), (a, b) in zip(together, (encoder(*p) for p in pairs), strict=True):
        assert pos.shape == a.shape and neg.shape == b.shape
        assert torch.allclose(pos, a, atol=1e-5) and torch.allclose(neg, b, atol=1e-5)
