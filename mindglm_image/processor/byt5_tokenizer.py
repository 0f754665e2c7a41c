"""ByT5 tokenizer: UTF-8 bytes shifted past the special ids, plus whole-token matches for added tokens.

Reproduces ``transformers``' ``ByT5Tokenizer`` (5.23.0) for encoding: added tokens (``<pad>``, ``</s>``,
``<unk>``, ``<extra_id_N>``, or whatever ``tokenizer_config.json`` lists) are matched as whole strings
first, honouring each one's ``lstrip``/``rstrip``/``single_word`` flags; every other character becomes
its UTF-8 bytes, id = byte + 3; ``</s>`` is appended unless the ids already end with it; truncation
drops ids from the right to leave room for that ``</s>``. No vocabulary file exists: the folder's
``tokenizer_config.json`` only tells which added tokens exist.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

#: ids below this are pad/eos/unk; byte b has id b + BYTE_OFFSET
BYTE_OFFSET = 3


class TokenizerError(ValueError):
    """A tokenizer folder or call that cannot be honoured."""


@dataclasses.dataclass(frozen=True)
class AddedToken:
    content: str
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False


def _default_added_tokens(pad: str, eos: str, unk: str, extra: list[str]) -> dict[int, AddedToken]:
    # pad/eos/unk strip surrounding whitespace (kept for backward compatibility by the reference);
    # sentinel/extra tokens follow the 256 byte ids in the order given.
    tokens = {0: AddedToken(pad, True, True), 1: AddedToken(eos, True, True), 2: AddedToken(unk, True, True)}
    for i, content in enumerate(extra):
        tokens[BYTE_OFFSET + 256 + i] = AddedToken(content)
    return tokens


def _token_text(value) -> str:
    return value["content"] if isinstance(value, dict) else value


class ByT5Tokenizer:
    """Encode text to byT5 ids; ``__call__`` mirrors ``tokenizer(texts, max_length=..., truncation=..., padding=...)``."""

    def __init__(self, added_tokens: dict[int, AddedToken] | None = None, eos_token: str = "</s>",
                 pad_token: str = "<pad>", unk_token: str = "<unk>", extra_ids: int = 125):
        if added_tokens is None:
            added_tokens = _default_added_tokens(pad_token, eos_token, unk_token,
                                                 [f"<extra_id_{i}>" for i in range(extra_ids)])
        self.added_tokens = dict(added_tokens)
        self._ids = {tok.content: idx for idx, tok in self.added_tokens.items()}
        for name, content in (("eos_token", eos_token), ("pad_token", pad_token)):
            if content not in self._ids:
                raise TokenizerError(f"{name} {content!r} is not among the added tokens; fix tokenizer_config.json")
        self.eos_token_id = self._ids[eos_token]
        self.pad_token_id = self._ids[pad_token]
        # Leftmost match, longest alternative first: equals the reference's trie for token sets where
        # no token is a substring of another (true of every byT5 vocabulary).
        contents = sorted(self._ids, key=len, reverse=True)
        self._splitter = re.compile("(" + "|".join(re.escape(c) for c in contents) + ")") if contents else None

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "ByT5Tokenizer":
        """Read ``folder/tokenizer_config.json`` (written by ``save_pretrained``); defaults when absent."""
        path = Path(folder) / "tokenizer_config.json"
        if not path.is_file():
            if not Path(folder).is_dir():
                raise TokenizerError(f"tokenizer folder not found: {folder}")
            return cls()
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise TokenizerError(f"{path} is not valid JSON ({err}); restore it from the checkpoint") from err
        names = {k: _token_text(cfg.get(k, d)) for k, d in
                 (("eos_token", "</s>"), ("pad_token", "<pad>"), ("unk_token", "<unk>"))}
        decoder = cfg.get("added_tokens_decoder")
        if decoder:
            added = {int(idx): AddedToken(tok["content"], bool(tok.get("lstrip")), bool(tok.get("rstrip")),
                                          bool(tok.get("single_word"))) for idx, tok in decoder.items()}
        else:
            extra = cfg.get("extra_special_tokens") or cfg.get("additional_special_tokens")
            extra_ids = int(cfg.get("extra_ids", 125))
            extra = [_token_text(t) for t in extra] if extra else [f"<extra_id_{i}>" for i in range(extra_ids)]
            added = _default_added_tokens(names["pad_token"], names["eos_token"], names["unk_token"], extra)
        return cls(added, **names)

    def _pieces(self, text: str) -> list[str]:
        """Split on added tokens and apply their whitespace-stripping flags, as the reference does."""
        if self._splitter is None:
            return [text]
        # Adjacent matches leave empty strings between them; drop them so neighbours are real pieces.
        pieces = [p for p in self._splitter.split(text) if p]
        for i in range(len(pieces)):
            piece = pieces[i]
            if piece not in self._ids:
                continue
            tok = self.added_tokens[self._ids[piece]]
            left = pieces[i - 1] if i > 0 else None
            right = pieces[i + 1] if i < len(pieces) - 1 else None
            if tok.rstrip and right:
                pieces[i + 1] = right.lstrip()
            if tok.lstrip and left:
                pieces[i - 1] = left.rstrip()
            if tok.single_word:
                if left and left[-1] != " ":
                    pieces[i - 1] += piece
                    pieces[i] = ""
                elif right and right[0] != " ":
                    pieces[i + 1] = piece + pieces[i + 1]
                    pieces[i] = ""
        return [p for p in pieces if p]

    def tokenize(self, text: str) -> list[int]:
        """Ids of ``text`` without the trailing ``</s>``."""
        if not isinstance(text, str):
            raise TokenizerError(f"expected a string, got {type(text).__name__}")
        ids: list[int] = []
        for piece in self._pieces(text):
            if piece in self._ids:
                ids.append(self._ids[piece])
            else:
                ids.extend(self._ids.get(chr(b), b + BYTE_OFFSET) for b in piece.encode("utf-8"))
        return ids

    def encode(self, text: str, max_length: int | None = None, truncation: bool = False) -> list[int]:
        """Ids with ``</s>`` appended (unless already last); truncated to ``max_length`` when asked."""
        ids = self.tokenize(text)
        if truncation and max_length is not None:
            if max_length < 1:
                raise TokenizerError(f"max_length={max_length} leaves no room for </s>; use at least 1")
            if len(ids) + 1 > max_length:
                ids = ids[:max_length - 1]
        if not ids or ids[-1] != self.eos_token_id:
            ids = ids + [self.eos_token_id]
        return ids

    def __call__(self, texts: str | list[str], max_length: int | None = None, truncation: bool = False,
                 padding: bool = False) -> dict[str, list]:
        """``input_ids``/``attention_mask`` per text; ``padding=True`` right-pads to the longest with pad ids."""
        single = isinstance(texts, str)
        batch = [self.encode(t, max_length, truncation) for t in ([texts] if single else texts)]
        longest = max((len(ids) for ids in batch), default=0) if padding else 0
        input_ids = [ids + [self.pad_token_id] * max(0, longest - len(ids)) for ids in batch]
        attention_mask = [[1] * len(ids) + [0] * max(0, longest - len(ids)) for ids in batch]
        if single:
            return {"input_ids": input_ids[0], "attention_mask": attention_mask[0]}
        return {"input_ids": input_ids, "attention_mask": attention_mask}
