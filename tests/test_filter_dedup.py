"""MinHash + LSH dedup: planted near-duplicates are caught, distinct traces are left alone."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from distill.filter.dedup import DuplicateFinder, exact_keys
from distill.filter.minhash import (
    MinHasher,
    band_keys,
    collision_probability,
    has_words,
    jaccard_estimate,
    lsh_params,
)
from testing.filter_data import perturb, synthetic_item, teacher_reasoning


def shingles(text: str, size: int = 5) -> set[tuple[str, ...]]:
    words = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    return {tuple(words[i:i + size]) for i in range(max(1, len(words) - size + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], dict[int, int], set[int]]:
    """400 distinct reasoning texts, then 40 near copies (1-3 words changed, case and
    punctuation noise) and 10 exact copies (case/punctuation only) of earlier ones."""
    rng = random.Random(7)
    texts = [teacher_reasoning(synthetic_item(i, rng), rng, style=i % 4) for i in range(400)]
    planted: dict[int, int] = {}
    exact: set[int] = set()
    for _ in range(40):
        source = rng.randrange(400)
        planted[len(texts)] = source
        texts.append(perturb(texts[source], rng, edits=rng.randint(1, 3)))
    for _ in range(10):
        source = rng.randrange(400)
        planted[len(texts)] = source
        exact.add(len(texts))
        texts.append(texts[source].upper().replace(".", " ! "))
    return texts, planted, exact


def find(texts: list[str], threshold: float, workdir: Path, partitions: int = 4,
         salt: np.ndarray | None = None):
    hasher = MinHasher()
    signatures, text_hashes = hasher.signatures(texts)
    bands, rows = lsh_params(threshold)
    finder = DuplicateFinder(workdir, partitions=partitions, threshold=threshold)
    ordinals = np.arange(len(texts))
    finder.add_signatures(signatures)
    finder.add(ordinals, exact=exact_keys(text_hashes, salt),
               bands=band_keys(signatures, bands, rows, salt))
    return finder.resolve(len(texts))


def test_signatures_ignore_case_punctuation_and_spacing() -> None:
    hasher = MinHasher()
    a = "The digits are 3, 5 and 7.  So 3 + 5 + 7 = 15.\nAnswer: 15"
    b = "the DIGITS are 3 5 and 7 so 3 5 7 15 answer 15!!"
    signatures, hashes = hasher.signatures([a, b, a + " extra words here"])
    assert (signatures[0] == signatures[1]).all() and hashes[0] == hashes[1]
    assert hashes[0] != hashes[2]
    empty, _ = hasher.signatures(["", "?!", "one"])
    assert has_words(empty).tolist() == [False, False, True]


def test_signatures_estimate_jaccard_without_bias(corpus) -> None:
    texts, planted, _ = corpus
    hasher = MinHasher()
    signatures, _ = hasher.signatures(texts)
    rng = random.Random(3)
    pairs = [(c, s) for c, s in planted.items()] + \
            [(rng.randrange(400), rng.randrange(400)) for _ in range(60)]
    errors = [jaccard_estimate(signatures[a], signatures[b]) - jaccard(texts[a], texts[b])
              for a, b in pairs if a != b]
    assert abs(np.mean(errors)) < 0.02
    assert np.std(errors) < 0.06  # sqrt(J(1-J)/128) <= 0.044


def test_lsh_parameters_match_the_reference_implementation() -> None:
    from datasketch import MinHashLSH

    for threshold in (0.5, 0.7, 0.8, 0.9):
        reference = MinHashLSH(threshold=threshold, num_perm=128)
        assert lsh_params(threshold) == (reference.b, reference.r)
    bands, rows = lsh_params(0.7)
    assert collision_probability(0.9, bands, rows) > 0.99
    assert collision_probability(0.3, bands, rows) < 0.01


def test_planted_near_duplicates_are_caught_and_distinct_texts_left_alone(
        corpus, tmp_path: Path) -> None:
    texts, planted, exact = corpus
    result = find(texts, 0.7, tmp_path / "keys")
    flagged = {i for i in range(len(texts)) if result.is_duplicate(i)}
    caught = flagged & set(planted)
    assert len(caught) / len(planted) >= 0.95, sorted(set(planted) - flagged)
    assert flagged <= set(planted), "a distinct text was called a duplicate"
    for copy in caught:  # each copy points at the text it was made from (the earliest)
        assert result.representative[copy] == planted[copy]
    assert {i for i in exact if result.exact[i]} == exact
    assert not any(result.exact[i] for i in set(planted) - exact)


def test_partitioning_does_not_change_the_result(corpus, tmp_path: Path) -> None:
    texts, _, _ = corpus
    one = find(texts, 0.7, tmp_path / "one", partitions=1)
    many = find(texts, 0.7, tmp_path / "many", partitions=13)
    assert (one.representative == many.representative).all()
    assert (one.exact == many.exact).all() and one.groups == many.groups
    assert not list((tmp_path / "many").iterdir())  # spilled keys are removed


def test_scope_salt_keeps_other_images_apart(tmp_path: Path) -> None:
    text = "There are 4 red cups on the table and 3 blue cups on the shelf, 7 in total."
    texts = [text, text, text + " Indeed.", text]
    salt = np.array([1, 1, 1, 2], dtype=np.uint64)  # the last one is about another image
    result = find(texts, 0.7, tmp_path / "keys", salt=salt)
    assert result.representative.tolist() == [0, 0, 0, 3]
    assert result.exact.tolist() == [False, True, False, False]
    unscoped = find(texts, 0.7, tmp_path / "keys2")
    assert unscoped.representative.tolist() == [0, 0, 0, 0]


def test_groups_chain_through_the_earliest_item(tmp_path: Path) -> None:
    finder = DuplicateFinder(tmp_path, partitions=2)
    keys = np.array([[10, 11], [12, 11], [12, 13], [99, 98]], dtype=np.uint64)
    finder.add(np.arange(4), bands=keys)
    result = finder.resolve(4)
    assert result.representative.tolist() == [0, 0, 0, 3] and result.groups == 1


def test_band_candidates_are_confirmed_by_their_signatures(tmp_path: Path) -> None:
    """A chance collision in one band must not link (and chain) unrelated items."""
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**32, size=(3, 128), dtype=np.uint64).astype(np.uint32)
    signatures[2] = signatures[1]
    signatures[2, :10] += 1  # item 2 agrees with item 1 on 118 of 128 minima
    bands = np.array([[7, 1], [7, 2], [8, 2]], dtype=np.uint64)  # 0~1 and 1~2 collide
    unchecked = DuplicateFinder(tmp_path / "a", partitions=2)
    unchecked.add(np.arange(3), bands=bands)
    assert unchecked.resolve(3).representative.tolist() == [0, 0, 0]
    checked = DuplicateFinder(tmp_path / "b", partitions=2, threshold=0.7)
    checked.add_signatures(signatures)
    checked.add(np.arange(3), bands=bands)
    assert checked.resolve(3).representative.tolist() == [0, 1, 1]
