"""The plan a comparison or compositional question's phrasing asks for."""

from __future__ import annotations

import time

import pytest

from langchain_complm.decompose.phrasing import (
    bridge_plan,
    chain_plan,
    comparison_items,
    comparison_plan,
    multihop_kind,
)


@pytest.mark.parametrize(
    ("question", "lookups", "compare"),
    [
        ("Who was born first, Johann Sebastian Bach or George Frideric Handel?",
         ["When was Johann Sebastian Bach born?", "When was George Frideric Handel born?"],
         "Which date is earlier: {q1} or {q2}?"),
        ("Which is longer, the Amazon River or the Mississippi River?",
         ["How long is Amazon River?", "How long is Mississippi River?"],
         "Which is longer: {q1} or {q2}?"),
        ("Which has a lower boiling point: ethanol or water?",
         ["What is the boiling point of ethanol?", "What is the boiling point of water?"],
         "Which number is smaller: {q1} or {q2}?"),
        ("Which band has more members, Queen or Nirvana?",
         ["How many members does the band Queen have?",
          "How many members does the band Nirvana have?"],
         "Which number is larger: {q1} or {q2}?"),
        ("Which planet is closer to the Sun, Venus or Mars?",
         ["How far is the planet Venus from the Sun?", "How far is the planet Mars from the Sun?"],
         "Which number is smaller: {q1} or {q2}?"),
        ("Are Hanafuda and Okey both card games?",
         ["Is Hanafuda card games?", "Is Okey card games?"], "Are both {q1} and {q2} yes?"),
        ("Have Serena Williams and Roger Federer both won Wimbledon?",
         ["Has Serena Williams won Wimbledon?", "Has Roger Federer won Wimbledon?"],
         "Are both {q1} and {q2} yes?"),
        ("Were Ernest Hemingway and F. Scott Fitzgerald of the same nationality?",
         ["What was the nationality of Ernest Hemingway?",
          "What was the nationality of F. Scott Fitzgerald?"],
         "Are {q1} and {q2} the same nationality?"),
        ("Are Jerome Storm and Andrés Wood from the same country?",
         ["What country is Jerome Storm from?", "What country is Andrés Wood from?"],
         "Are {q1} and {q2} the same country?"),
        ("Were Ernest Hemingway and William Faulkner born in the same state?",
         ["What state was Ernest Hemingway born in?", "What state was William Faulkner born in?"],
         "Are {q1} and {q2} the same state?"),
        ("Who died first, Jane Austen or Charlotte Bronte?",
         ["When did Jane Austen die?", "When did Charlotte Bronte die?"],
         "Which date is earlier: {q1} or {q2}?"),
        ("Which city is further north, Oslo or Helsinki?",
         ["What is the latitude of the city Oslo?", "What is the latitude of the city Helsinki?"],
         "Which number is larger: {q1} or {q2}?"),
        ("Which film was released first, Jaws or The Godfather?",  # a title keeps its "The"
         ["When was the film Jaws released?", "When was the film The Godfather released?"],
         "Which date is earlier: {q1} or {q2}?"),
        ("Do Marie Curie and Pierre Curie have the same nationality?",
         ["What is the nationality of Marie Curie?", "What is the nationality of Pierre Curie?"],
         "Are {q1} and {q2} the same nationality?"),
    ],
)  # fmt: skip
def test_a_comparison_is_planned_item_by_item(
    question: str, lookups: list[str], compare: str
) -> None:
    assert comparison_plan(question) == [
        (lookups[0], ()),
        (lookups[1], ()),
        (compare, ("q1", "q2")),
    ]


@pytest.mark.parametrize(
    "question",
    [
        "Which film has the director born later, Amadeus or The Shining?",  # a bridge
        "Which director was also a writer, Noel M. Smith or Reza Parsa?",  # no attribute
        "Were the authors of Pride and Prejudice and Emma born in the same country?",
        "Which city is larger, Berkeley, California or Austin, Texas?",  # commas in items
        "Who was born first, Dexter or his brother Dean?",  # an item pointing back
        "What is the capital of France?",
    ],
)
def test_a_question_the_reading_cannot_plan_gets_none(question: str) -> None:
    assert comparison_plan(question) is None


def test_have_the_same_ends_the_second_item() -> None:
    assert comparison_items("Do Jelena Jankovic and Marat Safin have the same coach?") == (
        "Jelena Jankovic",
        "Marat Safin",
    )


@pytest.mark.parametrize(
    ("question", "finds", "attribute", "compare"),
    [
        ("Which film has the director born later, Amadeus or The Shining?",
         ["Who is the director of the film Amadeus?",
          "Who is the director of the film The Shining?"],
         "When was {x} born?", "Which date is later: {q3} or {q4}?"),
        ("Whose composer died younger, The Magic Flute or The Barber of Seville?",
         ["Who is the composer of The Magic Flute?",
          "Who is the composer of The Barber of Seville?"],
         "At what age did {x} die?", "Which number is smaller: {q3} or {q4}?"),
        ("Which company's founder was born earlier, Ford or Toyota?",
         ["Who is the founder of the company Ford?", "Who is the founder of the company Toyota?"],
         "When was {x} born?", "Which date is earlier: {q3} or {q4}?"),
        ("Which band's lead singer is younger, Coldplay or U2?",
         ["Who is the lead singer of the band Coldplay?", "Who is the lead singer of the band U2?"],
         "When was {x} born?", "Which date is later: {q3} or {q4}?"),
        ("Which country's capital is further north, Finland or Estonia?",
         ["What is the capital of the country Finland?",
          "What is the capital of the country Estonia?"],
         "What is the latitude of {x}?", "Which number is larger: {q3} or {q4}?"),
        ("Which company's headquarters is located farther west, Nokia or Volvo?",
         ["What is the headquarters of the company Nokia?",
          "What is the headquarters of the company Volvo?"],
         "What is the longitude of {x}?", "Which number is smaller: {q3} or {q4}?"),
    ],
)  # fmt: skip
def test_a_bridge_finds_each_items_relation_then_compares_its_attribute(
    question: str, finds: list[str], attribute: str, compare: str
) -> None:
    assert multihop_kind(question) == "bridge"
    assert bridge_plan(question) == [
        (finds[0], ()),
        (finds[1], ()),
        (attribute.format(x="{q1}"), ("q1",)),
        (attribute.format(x="{q2}"), ("q2",)),
        (compare, ("q3", "q4")),
    ]


@pytest.mark.parametrize(
    "question",
    [
        "Who was born first, Johann Sebastian Bach or George Frideric Handel?",  # no relation
        "Which film has the director who was also a writer, Jaws or Alien?",  # no attribute
        "Were the authors of The Hobbit and Dune born in the same country?",  # not at the head
        "Which film has the director born later, Paris, Texas or Alien?",  # commas in items
    ],
)
def test_a_question_the_bridge_reading_cannot_plan_gets_none(question: str) -> None:
    assert bridge_plan(question) is None


@pytest.mark.parametrize(
    ("question", "steps"),
    [
        ("When did the president who said Tear Down This Wall die?",
         [("Who is the president who said Tear Down This Wall?", ()),
          ("When did {q1} die?", ("q1",))]),
        ("In what year was the tallest self-supporting tower completed?",
         [("What is the tallest self-supporting tower?", ()),
          ("In what year was {q1} completed?", ("q1",))]),
        ("Who is the father of the father of modern Hebrew?",
         [("Who is the father of modern Hebrew?", ()), ("Who is the father of {q1}?", ("q1",))]),
        ("How many times did plague occur in the place where Crucifixion's creator died?",
         [("Who is Crucifixion's creator?", ()), ("What is the place where {q1} died?", ("q1",)),
          ("How many times did plague occur in {q2}?", ("q2",))]),
        # a description inside an inverted question's subject ends before its verb
        ("Where was the wife of the director of Jaws born?",
         [("Who is the director of Jaws?", ()), ("Who is the wife of {q1}?", ("q1",)),
          ("Where was {q2} born?", ("q2",))]),
        ("In what country was the only cruise line that flies the American flag incorporated in?",
         [("What is the only cruise line that flies the American flag?", ()),
          ("In what country was {q1} incorporated in?", ("q1",))]),
        ("Mesih Pasha's uncle became emperor in what year?",
         [("Who is Mesih Pasha's uncle?", ()), ("{q1} became emperor in what year?", ("q1",))]),
        ("What company is the label responsible for Don't Let Me Wait Too Long a part of?",
         [("Who is the label responsible for Don't Let Me Wait Too Long?", ()),
          ("What company is {q1} a part of?", ("q1",))]),
        ("Where is the casino that Summer Nights takes place in?",
         [("What is the casino that Summer Nights takes place in?", ()),
          ("Where is {q1}?", ("q1",))]),
        ("Who won the 1993 Indy Car race in the city with the largest population in the state "
         "where Poachie Range is located?",
         [("What is the state where Poachie Range is located?", ()),
          ("Who won the 1993 Indy Car race in the city with the largest population in {q1}?",
           ("q1",))]),
    ],
)  # fmt: skip
def test_a_compositional_question_is_planned_description_by_description(
    question: str, steps: list[tuple[str, tuple[str, ...]]]
) -> None:
    assert chain_plan(question) == steps


@pytest.mark.parametrize(
    "question",
    [
        "What is the capital of France?",  # the description is the whole question
        "What is the largest planet in the solar system?",
        "hey, what is the greatest common divisor of 270 and 70?",
        "What did the families of Romeo and Juliet have against each other?",
        # a description listed beside another part is asked beside it
        "Can you tell me the freezing point of mercury and the author of Moby-Dick?",
        "Which country hosted the 2016 Summer Olympics, and what is the currency of that country?",
        "The native country of emu birds started conscription. What year did the draft start?",
    ],
)
def test_a_question_with_no_description_to_look_up_first_gets_no_chain(question: str) -> None:
    assert chain_plan(question) is None


@pytest.mark.parametrize(
    "question",
    [
        "Are " + "x and " * 10_000 + "y?",  # lazy item patterns with no end in sight
        "When did the " + "man who said " * 5_000 + "die?",
    ],
)
def test_a_long_text_is_read_in_time(question: str) -> None:
    started = time.perf_counter()
    assert comparison_plan(question) is None
    assert bridge_plan(question) is None
    assert chain_plan(question) is None
    assert time.perf_counter() - started < 2.0
