"""Prompt encoding without CLIP's 77-token limit: chunks of 75 tokens, joined; from the text
encoder's last layer, or (`clip_skip` 2) the one before it, as many community SD1.5 checkpoints
were trained. Embeddings are cached on everything that makes them: the texts, the clip skip and
the LoRAs active on the text encoder."""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from transformers import CLIPTextModel, CLIPTokenizer


def chunk_token_ids(ids: list[int], bos: int, eos: int, length: int = 77) -> list[list[int]]:
    """Cut ids into chunks of `length - 2`, each `[BOS] + chunk + [EOS]` padded with EOS.

    A text with no tokens still gets one chunk (the hosted model crashes there).
    """
    body = length - 2
    pieces = [ids[i : i + body] for i in range(0, len(ids), body)] or [[]]
    chunks = []
    for piece in pieces:
        chunk = [bos, *piece, eos]
        chunks.append(chunk + [eos] * (length - len(chunk)))
    return chunks


def repeat_to(chunks: torch.Tensor, count: int) -> torch.Tensor:
    """Repeat a chunk list cyclically and keep the first `count`."""
    reps = -(-count // len(chunks))
    return torch.cat([chunks] * reps, dim=0)[:count]


def join_chunks(chunks: torch.Tensor) -> torch.Tensor:
    """[n, 77, d] to [1, 77 * n, d]."""
    return chunks.reshape(1, -1, chunks.shape[-1])


class PromptEncoder:
    """Turns a (positive, negative) text pair into equal-length embeddings, with a small cache.
    `variant` says how the text encoder computes beyond the texts (the LoRAs active on it); the
    relighter passes it with every call."""

    def __init__(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, cache_size: int = 8) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        # The fast tokenizer sets its truncation on each call: two threads at once (the server
        # sizing a new request while a batch encodes its prompts) can fail with "Already borrowed".
        self._tokenizing = threading.Lock()

    def token_chunks(self, text: str) -> list[list[int]]:
        tok = self.tokenizer
        # Not verbose: the tokenizer would warn that a long prompt overflows CLIP, which the chunks below avoid.
        with self._tokenizing:
            ids = tok(text, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
        return chunk_token_ids(ids, tok.bos_token_id, tok.eos_token_id, tok.model_max_length)

    @torch.inference_mode()
    def encode_text(self, text: str, clip_skip: int = 1) -> torch.Tensor:
        return self.encode_texts([text], clip_skip)[0]

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], clip_skip: int = 1) -> list[torch.Tensor]:
        """Several texts' chunk embeddings from one pass of the text encoder."""
        chunks = [self.token_chunks(t) for t in texts]
        ids = torch.tensor([c for cs in chunks for c in cs], dtype=torch.int64, device=self.text_encoder.device)
        if clip_skip == 1:
            hidden = self.text_encoder(ids).last_hidden_state
        else:  # an earlier layer's output, through the final layer norm (as A1111 and diffusers do)
            out = self.text_encoder(ids, output_hidden_states=True)
            hidden = self.text_encoder.final_layer_norm(out.hidden_states[-clip_skip])
        return list(torch.split(hidden, [len(cs) for cs in chunks]))

    def __call__(self, positive: str, negative: str, clip_skip: int = 1, variant: tuple = ()):
        return self.pairs([(positive, negative)], clip_skip, variant)[0]

    def pairs(
        self, pairs: list[tuple[str, str]], clip_skip: int = 1, variant: tuple = ()
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each (positive, negative) pair's embeddings; those not cached are encoded together
        (a shared batch's prompts in one pass)."""
        keys = [(pair, clip_skip, variant) for pair in pairs]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        texts = [t for (pair, _, _) in todo for t in pair]
        if len(todo) == 1:  # one pair: each text on its own, as a lone relight always has
            encoded = [self.encode_text(texts[0], clip_skip), self.encode_text(texts[1], clip_skip)]
        else:
            encoded = self.encode_texts(texts, clip_skip) if todo else []
        for i, key in enumerate(todo):
            pos, neg = encoded[2 * i], encoded[2 * i + 1]
            count = max(len(pos), len(neg))
            self._cache[key] = join_chunks(repeat_to(pos, count)), join_chunks(repeat_to(neg, count))
        found = []
        for key in keys:
            self._cache.move_to_end(key)
            found.append(self._cache[key])
        while len(self._cache) > max(self.cache_size, len(set(keys))):
            self._cache.popitem(last=False)
        return found
