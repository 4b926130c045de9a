"""The heuristic's regex-free paths for ASCII chunks count exactly what the regex scans count."""

from __future__ import annotations

import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apiexec.llm import tokenizer
from apiexec.llm.tokenizer import heuristic_count


def reference_count(text: str) -> int:
    """heuristic_count as it was: every chunk but a plain ASCII word priced by the regex scans."""
    if not text:
        return 0
    total = 0
    for chunk in text.split():
        if chunk.isascii() and chunk.isalpha():
            total += tokenizer._word_tokens(chunk)
        else:
            total += tokenizer._chunk_tokens(chunk)
    total += text.count("\n") + text.count("\t") + text.count("\r")
    total += len(tokenizer._SPACE_RUNS.findall(text))
    return total + 2 + total // 20


CHUNKS = [
    "ok.", "benchmark:", "1234", "(hello)", '"quoted"', "it's", "don't!", "2+2?", "...", "-", "v1.2.3",
    "3-5", "$100.00", "snake_case", "__init__", "a_1", "#!/usr/bin/env", "\x00x\x7f", "x\x1c", "1,000,000",
    "?!word", "word?!", "((12))", "12ab", "ab12", "A.B.C.", "URL:", "...7", "7...", "_", "é.", "中文,",
]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_chunks_count_as_the_regex_scans_count(chunk: str) -> None:
    for text in (chunk, f"say {chunk} now", f"{chunk}\n{chunk}  {chunk}"):
        assert heuristic_count(text) == reference_count(text), text


def test_ascii_punct_is_what_the_punctuation_pattern_takes() -> None:
    for code in range(128):
        ch = chr(code)
        assert (ch in tokenizer._ASCII_PUNCT) == (not ch.isspace() and not ch.isalnum() and ch != "_"), code


def test_random_ascii_texts_count_as_before() -> None:
    rnd = random.Random(18)
    alphabets = [string.printable + "\x00\x01\x1c\x7f", "ab1Z9_.:,;()'\"- ", "aA1 .,!?"]
    for i in range(20_000):
        alphabet = alphabets[i % len(alphabets)]
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40)))
        assert heuristic_count(text) == reference_count(text), repr(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x7F)) | st.text())
def test_any_text_counts_as_before(text: str) -> None:
    assert heuristic_count(text) == reference_count(text)
