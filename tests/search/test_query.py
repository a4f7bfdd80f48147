"""Query arithmetic: the parser, and the query vector against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest

import mcrx
from mcrx.errors import McrxError
from mcrx.search import Collection, Term, parse_query
from mcrx.search.query import combine


def describe(query, modalities=None) -> list[str]:
    return [term.describe() for term in parse_query(query, modalities)]


def test_the_issue_example_as_one_string_and_as_shell_words():
    expected = [Term(2.0, "dog barking"), Term(1.0, "cat.png"), Term(-1.0, "indoors")]
    assert parse_query('"2:dog barking" + cat.png - "indoors"') == expected
    assert parse_query(["2:dog barking", "+", "cat.png", "-", "indoors"]) == expected


def test_words_between_operators_form_one_term():
    assert describe("dog barking") == ["dog barking"]
    assert describe(["dog", "barking", "+", "rain"]) == ["dog barking", "rain"]


def test_weights_signs_modalities_and_items():
    terms = parse_query("- #3 + 0.5:audio:x.npy - 2:text:cat.png + 1e-1:#7")
    assert terms == [
        Term(-1.0, "#3", item=3),
        Term(0.5, "x.npy", modality="audio"),
        Term(-2.0, "cat.png", modality="text"),
        Term(0.1, "#7", item=7),
    ]


def test_a_prefix_that_is_no_modality_stays_in_the_text():
    assert parse_query("note: buy milk") == [Term(1.0, "note: buy milk")]
    assert parse_query("smell:rose", modalities=["smell", "text"]) == [
        Term(1.0, "rose", modality="smell")]


def test_an_apostrophe_does_not_break_a_one_string_query():
    assert describe("it's raining") == ["it's raining"]


@pytest.mark.parametrize("query, message", [
    ("", "empty query"),
    ("a + + b", "must stand between two terms"),
    ("+ a", "must stand between two terms"),
    ("- - a", "must stand between two terms"),
    ("a -", "ends with an operator"),
])
def test_malformed_queries_say_what_is_wrong(query, message):
    with pytest.raises(McrxError, match=message):
        parse_query(query)


def test_combine_normalises_the_weighted_sum_and_refuses_a_zero_sum():
    vectors = np.eye(3, dtype=np.float32)
    np.testing.assert_allclose(combine([3, 4, 0], vectors), [0.6, 0.8, 0.0], atol=1e-6)
    with pytest.raises(McrxError, match="cancel out"):
        combine([1, -1], np.stack([vectors[0], vectors[0]]))


def test_query_vector_and_scores_match_a_hand_computation(demo_collection, demo_files,
                                                          search_model):
    model = mcrx.load(search_model)
    query_file = sorted((demo_files["queries"] / "audio").rglob("*.npy"))[0]
    with Collection(demo_collection) as collection:
        a, b = (item.id for item in list(collection.items("pointcloud"))[:2])
        query = f"2:#{a} + audio:{query_file} - 0.5:#{b}"
        got = collection.query_vector(query)

        # by hand: the stored vectors of the items, the file embedded by the model itself
        stored = collection.vectors([a, b])
        embedded = model.embed("audio", [str(query_file)]).numpy()[0]
        total = 2 * stored[0] + embedded - 0.5 * stored[1]
        np.testing.assert_allclose(got, total / np.linalg.norm(total), atol=1e-5)

        # the exact index ranks every image by q·v, and reports that as the score
        hits = collection.search(query, n=10, modalities=["image"])
        images = list(collection.items("image"))
        scores = collection.vectors([i.id for i in images]) @ got
        order = np.argsort(-scores)[:10]
        assert [h.id for h in hits] == [images[i].id for i in order]
        np.testing.assert_allclose([h.score for h in hits], scores[order], atol=1e-5)


def test_a_file_of_the_collection_uses_its_stored_vector(demo_collection):
    with Collection(demo_collection) as collection:
        item = next(collection.items("audio"))
        # no modality given: the collection knows the file is audio
        np.testing.assert_allclose(collection.query_vector(item.path),
                                   collection.vectors([item.id])[0], atol=1e-6)
        assert collection.search(item.path, n=1)[0].id == item.id


def test_unclear_terms_are_refused_with_the_fix(demo_collection, demo_files):
    query_file = sorted((demo_files["queries"] / "audio").rglob("*.npy"))[0]
    with Collection(demo_collection) as collection:
        with pytest.raises(McrxError, match="cannot tell the modality.*MODALITY:"):
            collection.query_vector(str(query_file))  # .npy not in the collection
        with pytest.raises(McrxError, match="not found: missing.npy.*text:missing.npy"):
            collection.query_vector("missing.npy")
        with pytest.raises(McrxError, match="no item #999999"):
            collection.query_vector("#999999")
        # the toy world's texts are raw vectors: its text encoder says so for a string
        with pytest.raises(McrxError, match="raw vectors"):
            collection.query_vector("a dog barking")
