"""Plan repair on hand-written broken plans, and leaving good plans alone."""

from __future__ import annotations

import json
import time

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage

from langchain_complm.decompose import parse_plan
from langchain_complm.decompose._parser import MAX_REPLY_CHARS
from langchain_complm.decompose.generator import DecompositionInput, SubQueryGenerator
from langchain_complm.decompose.repair import repair_plan
from langchain_complm.evaluation.adversarial import REPAIR_QUERY, adversarial_plans
from langchain_complm.evaluation.sources import resolve_data_dir
from langchain_complm.plan import Plan, SubQuery
from langchain_complm.training.data import build_training_pairs

Step = tuple[str, list[str]]


def plan(query: str, *steps: Step) -> Plan:
    return Plan(
        query=query,
        sub_queries=tuple(
            SubQuery(id=f"q{i}", question=q, depends_on=tuple(d))
            for i, (q, d) in enumerate(steps, 1)
        ),
    )


def shape(p: Plan) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(sq.id, sq.question, sq.depends_on) for sq in p.sub_queries]


def repaired(query: str, *steps: Step) -> Plan:
    result = repair_plan(plan(query, *steps))
    assert result.repairs, "expected a repair"
    result.validate_dag()
    return result


# --- implicit references ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "steps", "expected"),
    [
        (
            "What is the atomic number of oxygen, and what is twice that number?",
            [("What is the atomic number of oxygen?", []), ("What is twice that number?", [])],
            ("What is twice {q1}?", ("q1",)),
        ),
        (  # the reference resolved by copying what q1 asks: q1's answer is meant
            "What is 2 to the power of 10, and is that number larger than 1000?",
            [("What is 2 to the power of 10?", []),
             ("Is 2 to the power of 10 larger than 1000?", [])],
            ("Is {q1} larger than 1000?", ("q1",)),
        ),
        (
            "Who wrote Dracula, and where was that author born?",
            [("Who wrote Dracula?", []), ("Where was Dracula born?", [])],
            ("Where was {q1} born?", ("q1",)),
        ),
        (
            "Which organ produces insulin, and how much does that organ weigh?",
            [("Which organ produces insulin?", []), ("How much does that organ weigh?", [])],
            ("How much does {q1} weigh?", ("q1",)),
        ),
        (
            "Who wrote Dracula, and where was that author born?",
            [("Who wrote Dracula?", []), ("Where was that author born?", [])],
            ("Where was {q1} born?", ("q1",)),
        ),
        (
            "Who directed Jaws, and in which year was he born?",
            [("Who directed Jaws?", []), ("In which year was he born?", [])],
            ("In which year was {q1} born?", ("q1",)),
        ),
        (
            "What is the capital of France, and what is its population?",
            [("What is the capital of France?", []), ("What is its population?", [])],
            ("What is {q1}'s population?", ("q1",)),
        ),
        (
            "What is 12 times 7, and what is the result divided by 4?",
            [("What is 12 times 7?", []), ("What is the result divided by 4?", [])],
            ("What is {q1} divided by 4?", ("q1",)),
        ),
        (
            "What is 3 cubed? Then double it.",
            [("What is 3 cubed?", []), ("Double it.", [])],
            ("Double {q1}.", ("q1",)),
        ),
        (
            "What is the boiling point of water in Celsius? What is that in Fahrenheit?",
            [("What is the boiling point of water in Celsius?", []),
             ("What is that in Fahrenheit?", [])],
            ("What is {q1} in Fahrenheit?", ("q1",)),
        ),
        (
            "How long is a marathon in kilometres, and can you convert it to miles?",
            [("How long is a marathon in kilometres?", []), ("Convert it to miles.", [])],
            ("Convert {q1} to miles.", ("q1",)),
        ),
        (
            "What is the speed of light, and how far does light go in 60 seconds at that speed?",
            [("What is the speed of light?", []),
             ("How far does light go in 60 seconds at that speed?", [])],
            ("How far does light go in 60 seconds at {q1}?", ("q1",)),
        ),
    ],
)  # fmt: skip
def test_a_reference_in_words_gets_the_dependency_and_the_placeholder(
    query: str, steps: list[Step], expected: tuple[str, tuple[str, ...]]
) -> None:
    result = repaired(query, *steps)
    assert (result.sub_queries[-1].question, result.sub_queries[-1].depends_on) == expected
    assert "dependency and placeholder" in result.repairs[-1]


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        ("What is the difference between them?", "What is the difference between {q1} and {q2}?"),
        ("What is their sum?", "What is the sum of {q1} and {q2}?"),
        ("What is the difference?", "What is the difference between {q1} and {q2}?"),
        ("Which is larger?", "Which is larger: {q1} or {q2}?"),
    ],
)
def test_a_plural_reference_depends_on_the_two_open_answers(last: str, expected: str) -> None:
    result = repaired(
        f"What are the populations of France and Spain? {last}",
        ("What is the population of France?", []),
        ("What is the population of Spain?", []),
        (last, []),
    )
    assert shape(result)[-1] == ("q3", expected, ("q1", "q2"))


def test_the_reference_goes_to_the_earlier_answer_of_its_kind() -> None:
    # "that number" skips the nearer question about a person.
    result = repaired(
        "What is 15% of 80, who wrote Hamlet, and what is that number plus 3?",
        ("What is 15% of 80?", []),
        ("Who wrote Hamlet?", []),
        ("What is that number plus 3?", []),
    )
    assert shape(result)[-1] == ("q3", "What is {q1} plus 3?", ("q1",))


def test_a_pronoun_naming_the_earlier_question_gets_the_dependency_only() -> None:
    # "it" is Hamlet, not the answer (a person): the expert needs the context, not a
    # placeholder that would make it "When was Shakespeare written?".
    result = repaired(
        "Who wrote Hamlet, and when was it written?",
        ("Who wrote Hamlet?", []),
        ("When was it written?", []),
    )
    assert shape(result)[-1] == ("q2", "When was it written?", ("q1",))
    assert result.repairs[-1].endswith(": dependency")


def test_a_pronoun_with_its_own_antecedent_is_left_alone() -> None:
    query = (
        "What is 2+2? Also, when you squeeze an air-filled party balloon, what do you "
        "increase its pressure or its volume?"
    )
    p = plan(
        query,
        ("What is 2+2?", []),
        ("When you squeeze an air-filled party balloon, do you increase its pressure?", []),
    )
    assert repair_plan(p).sub_queries == p.sub_queries


@pytest.mark.parametrize(
    "second",
    [
        "What is pneumonia and how is it diagnosed?",
        "What is recursion, and how does it work?",
        "Where is the Alhambra and when was it built?",
        "What are mitosis and meiosis, and how do they differ?",
    ],
)
def test_a_pronoun_in_a_second_clause_about_its_own_subject_is_left_alone(second: str) -> None:
    query = f"What is the square root of 676? {second}"
    p = plan(query, ("What is the square root of 676?", []), (second, []))
    assert repair_plan(p) == p


def test_a_pronoun_after_a_clause_that_names_nothing_still_refers_back() -> None:
    result = repaired(
        "Who wrote Hamlet, and when was it first performed?",
        ("Who wrote Hamlet?", []),
        ("And when was it first performed?", []),
    )
    assert result.sub_queries[1].depends_on == ("q1",)


@pytest.mark.parametrize("lead", ["hey, ", "Can you tell me: ", "Q: "])
def test_a_numbered_list_after_a_lead_in_is_covered_by_its_items(lead: str) -> None:
    query = f"{lead}1. Which is bigger, 92 or 874?\n2. Who directed the film The Godfather?"
    p = plan(
        query,
        ("Which is bigger, 92 or 874?", []),
        ("Who directed the film The Godfather?", []),
    )
    assert repair_plan(p) == p


def test_a_placeholder_without_its_dependency_gets_it() -> None:
    result = repaired(
        "Who directed Jaws, and when was that director born?",
        ("Who directed Jaws?", []),
        ("When was {q1} born?", []),
    )
    assert shape(result)[-1] == ("q2", "When was {q1} born?", ("q1",))


# --- removals -------------------------------------------------------------------------------


def test_a_repeated_sub_query_is_removed_and_its_dependents_use_the_first() -> None:
    result = repaired(
        "Who directed Jaws, and when was the director born?",
        ("Who directed Jaws?", []),
        ("Who directed  jaws", []),
        ("When was {q2} born?", ["q2"]),
    )
    assert shape(result) == [
        ("q1", "Who directed Jaws?", ()),
        ("q3", "When was {q1} born?", ("q1",)),
    ]
    assert result.repairs == ("q2: removed (repeats q1)",)


def test_a_sub_query_re_asking_the_whole_question_is_removed() -> None:
    query = "Who wrote Hamlet, and what is the boiling point of water?"
    result = repaired(
        query,
        ("Who wrote Hamlet?", []),
        ("What is the boiling point of water?", []),
        (query, []),
    )
    assert [sq.question for sq in result.sub_queries] == [
        "Who wrote Hamlet?",
        "What is the boiling point of water?",
    ]
    assert result.repairs == ("q3: removed (re-asks the whole question)",)


def test_the_whole_question_stays_when_the_others_do_not_cover_it() -> None:
    query = "What is the capital of France?"
    p = plan(query, (query, []), ("What is France?", []))
    assert [sq.question for sq in repair_plan(p).sub_queries] == [query, "What is France?"]


def test_an_invented_computation_is_removed() -> None:
    result = repaired(
        "What is the atomic number of oxygen, and what is twice that number?",
        ("What is the atomic number of oxygen?", []),
        ("What is twice that number?", []),
        ("Add 16 to {q1} and multiply that result by 10", ["q1"]),
    )
    assert shape(result) == [
        ("q1", "What is the atomic number of oxygen?", ()),
        ("q2", "What is twice {q1}?", ("q1",)),
    ]
    assert result.repairs[0] == "q3: removed (computes with 10, 16, not in the question)"


def test_a_generator_looping_on_one_hop_is_cut_back_to_the_question() -> None:
    # A small model stuck in a loop writes the same hop until its token budget runs out.
    hops = [(f"What is {{q{i}}} times 2?", [f"q{i}"]) for i in range(1, 99)]
    result = repaired(
        "What is 15% of 80, and who wrote Hamlet?",
        ("What is 15% of 80?", []),
        *hops,
        ("Who wrote Hamlet?", []),
    )
    assert shape(result) == [
        ("q1", "What is 15% of 80?", ()),
        ("q100", "Who wrote Hamlet?", ()),
    ]
    assert result.repairs[-1] == "q2: removed (computes with 2, not in the question)"


# Linear or quadratic work on a plan of the maximum reply length takes a few hundred
# milliseconds; removing one looping hop at a time took cubic time (14 s on 1,000 hops),
# and pairing restated parts re-read every pair (9 s on 800).
SECONDS_PER_PLAN = 2.0


@pytest.mark.parametrize("kind", sorted(adversarial_plans(1000)))
def test_adversarial_plans_of_the_maximum_length_are_repaired_in_time(kind: str) -> None:
    reply = adversarial_plans(MAX_REPLY_CHARS)[kind]
    parsed = parse_plan(reply, REPAIR_QUERY)
    started = time.perf_counter()
    result = repair_plan(parsed)
    assert time.perf_counter() - started < SECONDS_PER_PLAN
    assert result.sub_queries


@pytest.mark.parametrize(
    ("query", "first", "second", "invented"),
    [
        (
            "What are the three branches of the US government, and how many amendments does "
            "the Constitution have?",
            "What are the three branches of the US government?",
            "How many amendments does the Constitution have?",
            "What is the number of years that separate {q1} and {q2}?",
        ),
        (
            "Who painted the Mona Lisa? What is the capital of Peru?",
            "Who painted the Mona Lisa?",
            "What is the capital of Peru?",
            "Was {q1} born in {q2}?",
        ),
    ],
)
def test_a_combination_the_question_does_not_ask_for_is_removed(
    query: str, first: str, second: str, invented: str
) -> None:
    result = repaired(query, (first, []), (second, []), (invented, ["q1", "q2"]))
    assert shape(result) == [("q1", first, ()), ("q2", second, ())]
    assert result.repairs == (
        "q3: removed (combines answers the question does not ask to combine)",
    )


@pytest.mark.parametrize(
    "query",
    [
        "Who was born first, Marie Curie or Alan Turing?",
        "Was Marie Curie born before Alan Turing?",
        "How many years apart were Marie Curie and Alan Turing born?",
        "Were Marie Curie and Alan Turing born in the same year?",
    ],
)
def test_a_combination_the_question_asks_for_is_kept(query: str) -> None:
    p = plan(
        query,
        ("In which year was Marie Curie born?", []),
        ("In which year was Alan Turing born?", []),
        ("Compare {q1} and {q2}.", ["q1", "q2"]),
    )
    assert repair_plan(p) == p


def test_an_independent_step_about_something_else_is_removed() -> None:
    result = repaired(
        "What are the three branches of the US government, and how many amendments does the "
        "US Constitution have?",
        ("What are the three branches of the US government?", []),
        ("How many amendments does the US Constitution have?", []),
        ("What is the number of years that separate the first two questions?", []),
    )
    assert [sq.id for sq in result.sub_queries] == ["q1", "q2"]
    assert result.repairs == ("q3: removed (asks about nothing the question names)",)


def test_an_independent_step_the_question_needs_is_kept() -> None:
    # Few of its words are the question's, but without it the question is not asked.
    result = repair_plan(
        plan(
            "What is 2 plus 2, and who painted the Mona Lisa?",
            ("What is 2 plus 2?", []),
            ("Which Renaissance artist created the famous Lisa portrait?", []),
        )
    )
    assert [sq.id for sq in result.sub_queries][:2] == ["q1", "q2"]
    assert not any("removed" in note for note in result.repairs)


def test_a_hop_asked_again_of_its_own_answer_is_removed() -> None:
    result = repaired(
        "Who wrote 'The Raven', and in what city was that author born?",
        ("Who wrote The Raven?", []),
        ("In which city was {q1} born?", ["q1"]),
        ("In which city was {q2} born?", ["q2"]),
    )
    assert [sq.id for sq in result.sub_queries] == ["q1", "q2"]
    assert result.repairs == ("q3: removed (asks q2's hop again)",)


def test_a_hop_the_question_asks_twice_is_kept() -> None:
    p = plan(
        "Who is the father of the father of Prince William?",
        ("Who is the father of Prince William?", []),
        ("Who is the father of {q1}?", ["q1"]),
        ("Who is the father of {q2}?", ["q2"]),
    )
    # The third step repeats the second one's hop, but the question asks it twice.
    assert [sq.id for sq in repair_plan(p).sub_queries] == ["q1", "q2", "q3"]


def test_a_generator_loop_of_one_hop_is_cut_back_to_the_hop_asked() -> None:
    query = "What is 6 times 7? Next, multiply that result by 2 and add 1."
    again = [(f"Multiply {{q{i}}} by 2 and add 1.", [f"q{i}"]) for i in range(1, 6)]
    result = repaired(query, ("What is 6 times 7?", []), *again)
    assert shape(result) == [
        ("q1", "What is 6 times 7?", ()),
        ("q2", "Multiply {q1} by 2 and add 1.", ("q1",)),
    ]
    # Each removal makes the step before it final, and that one is judged in turn.
    assert result.repairs == tuple(
        f"q{i}: removed (asks q{i - 1}'s hop again)" for i in range(6, 2, -1)
    )


def test_a_step_asking_nothing_beyond_its_parent_is_removed() -> None:
    result = repaired(
        "Who discovered penicillin, and what is 9 squared?",
        ("Who discovered penicillin?", []),
        ("What is {q1}?", ["q1"]),
        ("What is 9 squared?", []),
    )
    assert [sq.question for sq in result.sub_queries] == [
        "Who discovered penicillin?",
        "What is 9 squared?",
    ]
    assert result.repairs == ("q2: removed (asks nothing beyond q1)",)


def test_a_second_question_about_the_first_answer_is_split_off() -> None:
    query = "Who founded Microsoft with Bill Gates, and when was he born?"
    result = repaired(query, (query, []))
    assert shape(result) == [
        ("q1", "Who founded Microsoft with Bill Gates?", ()),
        ("q2", "When was {q1} born?", ("q1",)),
    ]


@pytest.mark.parametrize(
    "query",
    [
        "Who wrote Beloved, and when was it first published?",
        "What is the capital of France, and what is its population?",
        "What is gout, and how is it treated?",
    ],
)
def test_a_second_question_about_what_the_first_names_stays_whole(query: str) -> None:
    p = plan(query, (query, []))
    assert repair_plan(p) == p


def test_a_pronoun_before_in_that_is_no_conversion_is_left_alone() -> None:
    p = plan(
        "Where is the Alhambra, and when was it built in its present form?",
        ("Where is the Alhambra, and when was it built in its present form?", []),
    )
    assert repair_plan(p) == p


# --- merged parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "parts"),
    [
        (
            "Please answer both:\n(1) What is 15% of 80?\n(2) What are the symptoms of "
            "iron-deficiency anemia?",
            ["What is 15% of 80?", "What are the symptoms of iron-deficiency anemia?"],
        ),
        (
            "Could you help me with two things?\nFirst: The eigenvalues of a Hermitian operator "
            "are always\nA) real\nB) imaginary\nSecond: Who wrote Dracula?",
            ["The eigenvalues of a Hermitian operator are always\nA) real\nB) imaginary",
             "Who wrote Dracula?"],
        ),
        (
            "Who painted Guernica? How many legs does a spider have? What is 7 times 8?",
            ["Who painted Guernica?", "How many legs does a spider have?", "What is 7 times 8?"],
        ),
    ],
)  # fmt: skip
def test_a_sub_query_copying_several_parts_is_split_into_them(query: str, parts: list[str]) -> None:
    result = repaired(query, (query, []))
    assert [sq.question for sq in result.sub_queries] == parts
    assert not any(sq.depends_on for sq in result.sub_queries)
    ids = ", ".join(f"q{i}" for i in range(1, len(parts) + 1))
    assert result.repairs == (f"q1: split into {ids}: it asked {len(parts)} parts of the question",)


def test_parts_copied_with_small_slips_are_split_into_the_questions_parts() -> None:
    program = (
        "In the program below, y is a positive integer.\nresult <- 0\nREPEAT 3 TIMES {\n"
        "REPEAT y TIMES {\nresult <- result + 1\n}\n}\nWhat is result afterwards?\n"
        "A) y+3\nB) 3y\nC) y^3\nD) 3^y"
    )
    case = (
        "A truck driver on his lunch break carelessly ran over a pedestrian, who sued his "
        "employer for negligence. Is the employer liable?\nA) Yes, by vicarious liability.\n"
        "B) No, he was not within the scope of his employment."
    )
    query = f"Here are two unrelated questions; answer each of them.\n1. {program}\n2. {case}"
    # The generator doubled a line of the program and wrote "2)" for "2.".
    copied = program.replace("REPEAT y TIMES {", "REPEAT y TIMES {\nREPEAT y TIMES {")
    result = repaired(query, (f"{copied}\n2) {case}", []))
    assert [sq.question for sq in result.sub_queries] == [program, case]


MCQ = (
    "A 52-year-old man has pain in the upper right abdomen after meals. Which enzyme is "
    "raised in his blood?\nA) Hepatic lipase\nB) Amylase\nC) Alkaline phosphatase\n"
    "D) Creatine kinase"
)


@pytest.mark.parametrize(
    "miscopy",
    [
        MCQ.replace("Hepatic", "Hepular"),  # a slip in a word
        MCQ.replace("\nC) Alkaline phosphatase", ""),  # an option dropped
        MCQ.replace("\nD) Creatine kinase", ""),  # the last option dropped: a prefix
        MCQ.replace("A 52-year-old man has", "A 52-year-old man who has"),  # a word added
    ],
    ids=["slip", "dropped-option", "dropped-last-option", "added-word"],
)
def test_a_miscopied_source_question_gets_the_users_text(miscopy: str) -> None:
    query = f"Please answer both.\n1. {MCQ}\n2. What is 15% of 80?"
    result = repaired(query, (miscopy, []), ("What is 15% of 80?", []))
    assert shape(result) == [("q1", MCQ, ()), ("q2", "What is 15% of 80?", ())]
    assert result.repairs == ("q1: restored to the user's text of a part it miscopied",)


THESIS_MCQ = (
    "Which of the following quotations best describes the central thesis of difference "
    "feminism?\nA) There are fundamental differences between individual women.\nB) Men and "
    "women have different conceptions of the feminist project.\nC) Women look to context, "
    "whereas men appeal to neutral, abstract notions of justice.\nD) Men are unable to "
    "comprehend their differences from women."
)
PASSAGE_MCQ = (
    'This question refers to the following information.\n"The imperialist system bears major '
    'responsibility for African economic retardation by draining African wealth."\nWalter '
    "Rodney, How Europe Underdeveloped Africa, 1974\nWhich of the following best explains the "
    "importance of trading contacts with Europeans in the period 1450 to 1750?\nA) Foodstuffs "
    "from the New World\nB) Firearms for new states\nC) Europeans bought every slave"
)
CUT_PARTS = (THESIS_MCQ, "What is 15% of 80?", PASSAGE_MCQ)


@pytest.mark.parametrize(
    ("index", "cut"),
    [
        (0, THESIS_MCQ.split("\nB)")[0]),  # cut after its first option
        (2, PASSAGE_MCQ.split(" by draining")[0] + "\n" + PASSAGE_MCQ.split("?\n")[1]),
    ],
    ids=["options-cut", "question-cut"],
)
def test_a_question_with_options_cut_short_gets_the_users_text(index: int, cut: str) -> None:
    # Any copy of a multiple-choice question from its start is that question: coverage
    # would otherwise ask the rest in a step that depends on the cut copy.
    query = "I have three questions.\n" + "\n".join(f"{i}. {q}" for i, q in enumerate(CUT_PARTS, 1))
    steps = [(cut if i == index else q, []) for i, q in enumerate(CUT_PARTS)]
    result = repaired(query, *steps)
    assert shape(result) == [(f"q{i}", q, ()) for i, q in enumerate(CUT_PARTS, 1)]
    assert result.repairs == (f"q{index + 1}: restored to the user's text of a part it miscopied",)


LIGHTS = (
    "Each pole on a road intersection has 4 street lights. If the number of poles at each "
    "intersection is 6, and the road has 4 intersections, calculate the total number of "
    "functioning street lights if 20 streetlights from the total number are not working."
)


def test_a_word_problem_with_the_next_questions_options_glued_on_gets_the_users_text() -> None:
    # A request without a question mark ("..., calculate the total") is a part, and the
    # options after it are the next part's, not its own.
    parts = (LIGHTS, THESIS_MCQ)
    query = "I have two questions.\n" + "\n".join(
        f"{n}, {q}" for n, q in zip(("First", "Second"), parts, strict=True)
    )
    glued = LIGHTS + "\nA)" + THESIS_MCQ.split("\nA)")[1]
    result = repaired(query, (glued, []), (THESIS_MCQ, []))
    assert shape(result) == [("q1", LIGHTS, ()), ("q2", THESIS_MCQ, ())]
    assert result.repairs == ("q1: restored to the user's text of a part it miscopied",)


PROBLEM = (
    "Tanya makes a salt scrub from salt, oil and sugar. She makes enough to fill a 10-ounce "
    "jar each time, and she uses twice as much oil as salt and as much salt as sugar. How "
    "many ounces of oil does she use?"
)


@pytest.mark.parametrize(
    "follow_up",
    [
        [("Multiply {q1} by 3 and subtract 2. What number do you get?", ["q1"])],
        # Not linked yet: its words are another step's, so the first hop stays one.
        [("Multiply that result by 3 and subtract 2. What number do you get?", [])],
        # Cut short: the first hop alone is coverage's to complete, not a miscopy.
        [],
    ],
    ids=["linked", "unlinked", "missing"],
)
def test_the_first_hop_of_a_word_problem_keeps_its_text(follow_up: list[Step]) -> None:
    query = f"{PROBLEM} Then multiply that result by 2 and add 1. What number do you get?"
    result = repair_plan(plan(query, (PROBLEM, []), *follow_up))
    assert result.sub_queries[0].question == PROBLEM
    assert not any("miscopied" in note for note in result.repairs)


def test_a_short_part_inside_a_rephrased_question_is_not_split_out() -> None:
    p = plan(
        "1. What is gout? 2. Who wrote Dracula?",
        ("What is the usual treatment of gout, and who is the author of Dracula?", []),
    )
    # Neither part occurs whole, so the sub-query is not taken for a copy of both.
    assert not any("split" in note for note in repair_plan(p).repairs)


def test_merged_parts_keep_their_place_among_the_others() -> None:
    result = repaired(
        "1. Who wrote Beloved? 2. What is the capital of Peru? 3. What is 2 plus 2?",
        ("Who wrote Beloved?", []),
        ("What is the capital of Peru? 3. What is 2 plus 2?", []),
    )
    assert shape(result) == [
        ("q1", "Who wrote Beloved?", ()),
        ("q2", "What is the capital of Peru?", ()),
        ("q3", "What is 2 plus 2?", ()),
    ]


@pytest.mark.parametrize(
    "query",
    [
        # One question, in a conjunction: may be one question, so no split.
        "Who wrote Beloved, and when was it first published?",
        # Sentences that start with a question word but ask nothing.
        'Read this. "When the ships sail from Macao, they carry silk. When they come to '
        'Canton, they stay days." Which of the following is true?\nA) silk\nB) silver',
    ],
)
def test_a_sub_query_holding_one_question_is_not_split(query: str) -> None:
    p = plan(query, (query, []))
    assert repair_plan(p) == p


def test_numbers_the_question_writes_in_words_are_not_invented() -> None:
    p = plan(
        "What is 7 times 6? Then triple the answer.",
        ("What is 7 times 6?", []),
        ("What is 3 times {q1}?", ["q1"]),
    )
    assert repair_plan(p) == p


# --- coverage -------------------------------------------------------------------------------


def test_a_word_problem_cut_before_its_follow_up_gets_the_follow_up_as_a_hop() -> None:
    follow_up = "Then multiply that result by 3 and subtract 2. What number do you get?"
    result = repaired(f"{PROBLEM} {follow_up}", (PROBLEM, []))
    # "twice" in the problem and "multiply" share a stem; the first hop ends at its "?".
    assert shape(result) == [("q1", PROBLEM, ()), ("q2", f"{{q1}} {follow_up}", ("q1",))]


def test_a_dropped_part_is_added() -> None:
    result = repaired(
        "What is 15% of 80, and what are the symptoms of iron-deficiency anemia?",
        ("What is 15% of 80?", []),
    )
    assert shape(result) == [
        ("q1", "What is 15% of 80?", ()),
        ("q2", "What are the symptoms of iron-deficiency anemia?", ()),
    ]


def test_a_dropped_source_question_is_added_whole() -> None:
    problem = (
        "A ball is dropped, falls 6 meters and then passes through a photogate. The "
        "predicted velocity is 20% above the measured one. Which best describes the cause?\n"
        "A) Air resistance\nB) Gravity varies"
    )
    query = f"Could you help me with two things?\nFirst: Who wrote Dracula?\nSecond: {problem}"
    result = repaired(query, ("Who wrote Dracula?", []))
    # Its sentences, its "and then" clause and its options are not parts of their own.
    assert shape(result) == [("q1", "Who wrote Dracula?", ()), ("q2", problem, ())]


def test_a_copied_source_question_needs_no_completion_of_its_options() -> None:
    mcq = (
        "What do meteorites reveal about the solar system?\nA) It is 4.6 billion years old."
        "\nB) It once held 10 planets."
    )
    word_problem = (
        "Each pole has 4 street lights and each of 4 intersections has 6 poles. How many "
        "lights are there if 20 are not working?"
    )
    query = f"I have two questions.\nFirst, {mcq}\nSecond, {word_problem}"
    p = plan(query, (mcq, []), (word_problem, []))
    assert repair_plan(p) == p


@pytest.mark.parametrize(
    ("query", "first", "completion"),
    [
        (
            "What is the place of birth of the director of film Jaws?",
            "Who directed the film Jaws?",
            "What is the place of birth of {q1}?",
        ),
        (
            "Who founded the company that distributed the film UHF?",
            "Which company distributed the film UHF?",
            "Who founded {q1}?",
        ),
        (
            "Where is Ulrich Walter's employer headquartered?",
            "Who is Ulrich Walter's employer?",
            "Where is {q1} headquartered?",
        ),
        (
            "Where was the author of Beloved born?",
            "Who wrote Beloved?",
            "Where was {q1} born?",
        ),
    ],
)
def test_a_chain_cut_short_gets_its_next_hop(query: str, first: str, completion: str) -> None:
    result = repaired(query, (first, []))
    assert shape(result) == [("q1", first, ()), ("q2", completion, ("q1",))]
    assert "only partly asked" in result.repairs[0]


def test_a_part_rephrased_with_its_numbers_gets_no_next_hop() -> None:
    p = plan(
        "what's the square of 17 and who painted the Mona Lisa",
        ("What is 17 times 17?", []),
        ("Who painted the Mona Lisa?", []),
    )
    assert repair_plan(p) == p


def test_a_complete_chain_is_left_alone() -> None:
    p = plan(
        "What is the place of birth of the director of film Jaws?",
        ("Who directed the film Jaws?", []),
        ("Where was {q1} born?", ["q1"]),
    )
    assert repair_plan(p) == p


def test_a_plan_that_asks_something_else_falls_back() -> None:
    result = repair_plan(
        plan("What is the boiling point of water?", ("What is the capital of Peru?", []))
    )
    assert result.is_fallback
    assert result.sub_queries[0].question == "What is the boiling point of water?"
    assert "do not ask the question" in (result.fallback_reason or "")


def test_repair_adds_nothing_beyond_the_cap() -> None:
    p = plan("What is 2+2, who wrote Hamlet, and where is Peru?", ("What is 2+2?", []))
    assert len(repair_plan(p, max_sub_queries=1).sub_queries) == 1
    assert len(repair_plan(p).sub_queries) == 3


def test_fallback_and_unreadable_plans_are_returned_unchanged() -> None:
    fallback = Plan.single("Who wrote Hamlet?", fallback_reason="model down")
    assert repair_plan(fallback) is fallback
    spanish = plan("¿Cuál es la capital de Francia?", ("What is the capital of France?", []))
    assert repair_plan(spanish) is spanish


# --- comparisons --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "steps", "lookups", "compare"),
    [
        (
            "Which is heavier, a blue whale or an African elephant?",
            [("Which is heavier, a blue whale or an African elephant?", [])],
            ["How heavy is a blue whale?", "How heavy is an African elephant?"],
            "Which is heavier: {q1} or {q2}?",
        ),
        (
            "Are Ari Up and Boz Burrell both guitarists?",
            [("What is the nationality of Ari Up and Boz Burrell?", [])],
            ["Is Ari Up guitarists?", "Is Boz Burrell guitarists?"],
            "Are both {q1} and {q2} yes?",
        ),
        (
            "Were Ransom Riggs and John Berry from the same country?",
            [("What is the capital of France?", []), ("What is the capital of Sweden?", []),
             ("Are {q1} and {q2} from the same country?", ["q1", "q2"])],
            ["What country was Ransom Riggs from?", "What country was John Berry from?"],
            "Are {q1} and {q2} the same country?",
        ),
        (
            "Which has a higher melting point: tungsten or copper?",
            [("What is the melting point of tungsten?", []),
             ("Which has a higher melting point: tungsten or copper?", ["q1"])],
            ["What is the melting point of tungsten?", "What is the melting point of copper?"],
            "Which number is larger: {q1} or {q2}?",
        ),
    ],
)  # fmt: skip
def test_a_comparison_not_looked_up_item_by_item_gets_its_plan(
    query: str, steps: list[Step], lookups: list[str], compare: str
) -> None:
    result = repaired(query, *steps)
    assert shape(result) == [
        ("q1", lookups[0], ()),
        ("q2", lookups[1], ()),
        ("q3", compare, ("q1", "q2")),
    ]


@pytest.mark.parametrize(
    ("query", "steps", "expected"),
    [
        ("What are the populations of Lagos and Cairo, and what is the difference between them?",
         [("What are the populations of Lagos and Cairo?", []),
          ("What is the difference between {q1} and {q1}?", ["q1"])],
         ["What is the population of Lagos?", "What is the population of Cairo?",
          "What is the difference between {q1} and {q3}?"]),
        ("What are the melting points of gold and silver, and which is higher?",
         [("What are the melting points of gold and silver?", []),
          ("Which is higher: gold or silver?", [])],
         ["What is the melting point of gold?", "What is the melting point of silver?",
          "Which is higher: {q1} or {q3}?"]),
    ],
)  # fmt: skip
def test_a_lookup_of_two_items_at_once_is_split_when_they_are_compared(
    query: str, steps: list[Step], expected: list[str]
) -> None:
    assert shape(repaired(query, *steps)) == [
        ("q1", expected[0], ()),
        ("q3", expected[1], ()),
        ("q2", expected[2], ("q1", "q3")),
    ]


def test_a_comparison_of_the_answers_no_step_asks_is_added() -> None:
    result = repaired(
        "How tall is the Eiffel Tower and how tall is the Statue of Liberty? Which of them is "
        "taller?",
        ("How tall is the Eiffel Tower?", []),
        ("How tall is the Statue of Liberty?", []),
    )
    assert shape(result)[2] == ("q3", "Which of {q1} and {q2} is taller?", ("q1", "q2"))


def test_a_lookup_of_two_items_is_kept_when_nothing_compares_them() -> None:
    given = plan(
        "What are the capitals of France and Spain?",
        ("What are the capitals of France and Spain?", []),
    )
    assert repair_plan(given) == given


@pytest.mark.parametrize(
    ("query", "steps"),
    [
        (  # each item looked up, in other words than the question's
            "Who was born first, Johann Sebastian Bach or George Frideric Handel?",
            [("In which year was Johann Sebastian Bach born?", []),
             ("In what year was George Frideric Handel born?", []),
             ("Which year is earlier: {q1} or {q2}?", ["q1", "q2"])],
        ),
        (  # a bridge the phrasing does not name: the lookups share "capital"
            "Do the capitals of Portugal and Greece each have more than a million inhabitants?",
            [("What is the capital of Portugal?", []), ("What is the capital of Greece?", []),
             ("How many inhabitants does {q1} have?", ["q1"]),
             ("How many inhabitants does {q2} have?", ["q2"]),
             ("Are both {q3} and {q4} more than a million?", ["q3", "q4"])],
        ),
        (  # a bridge whose plan holds its two hops: the model's
            "Whose director was born first, Gladiator or Avatar?",
            [("Who directed Gladiator?", []), ("Who directed Avatar?", []),
             ("In which year was {q1} born?", ["q1"]), ("In which year was {q2} born?", ["q2"]),
             ("Which year is earlier: {q3} or {q4}?", ["q3", "q4"])],
        ),
        (  # a phrasing with no attribute to look up
            "Which director was also a writer, Noel M. Smith or Reza Parsa?",
            [("Which director was also a writer, Noel M. Smith or Reza Parsa?", [])],
        ),
    ],
)  # fmt: skip
def test_a_comparison_is_left_alone_when_it_cannot_be_looked_up_better(
    query: str, steps: list[Step]
) -> None:
    given = plan(query, *steps)
    assert repair_plan(given) == given


BRIDGE = [
    ("q1", "Who is the director of the film Amadeus?", ()),
    ("q2", "Who is the director of the film The Shining?", ()),
    ("q3", "When was {q1} born?", ("q1",)),
    ("q4", "When was {q2} born?", ("q2",)),
    ("q5", "Which date is later: {q3} or {q4}?", ("q3", "q4")),
]


@pytest.mark.parametrize(
    "steps",
    [
        [("Which film has the director born later, Amadeus or The Shining?", [])],
        [("Who directed the film Amadeus or The Shining?", [])],
        # each item's director looked up, then compared as if they were the answer
        [("Who directed Amadeus?", []), ("Who directed The Shining?", []),
         ("Which is younger: {q1} or {q2}?", ["q1", "q2"])],
        # the items compared directly
        [("When was Amadeus released?", []), ("When was The Shining released?", []),
         ("Which date is later: {q1} or {q2}?", ["q1", "q2"])],
    ],
)  # fmt: skip
def test_a_bridge_planned_without_its_two_hops_gets_them(steps: list[Step]) -> None:
    result = repaired("Which film has the director born later, Amadeus or The Shining?", *steps)
    assert shape(result) == BRIDGE
    assert "related entity" in result.repairs[-1]
    assert repair_plan(result) == result


def test_a_bridge_is_not_replaced_beyond_the_sub_query_limit() -> None:
    given = plan(
        "Which film has the director born later, Amadeus or The Shining?",
        ("Which film has the director born later, Amadeus or The Shining?", []),
    )
    assert repair_plan(given, max_sub_queries=4) == given


def test_a_comparison_beside_another_part_is_left_to_coverage() -> None:
    given = plan(
        "Which is heavier, a blue whale or an African elephant? Also, what is 2 + 2?",
        ("Which is heavier, a blue whale or an African elephant?", []),
        ("What is 2 + 2?", []),
    )
    assert not any("looked up one by one" in r for r in repair_plan(given).repairs)


@pytest.mark.parametrize(
    "steps",
    [
        [("When was the person who shared the Nobel Prize in Physics in 1954 with Max Born born?",
          [])],
        [("When was the person that shared the 1954 Nobel Prize in Physics with Max Born born?",
          [])],
    ],
)  # fmt: skip
def test_a_compositional_question_planned_without_a_hop_gets_its_chain(steps: list[Step]) -> None:
    query = "When was the person who shared the Nobel Prize in Physics in 1954 with Max Born born?"
    result = repaired(query, *steps)
    assert shape(result) == [
        (
            "q1",
            "Who is the person who shared the Nobel Prize in Physics in 1954 with Max Born?",
            (),
        ),
        ("q2", "When was {q1} born?", ("q1",)),
    ]
    assert "hop by hop" in result.repairs[-1]


@pytest.mark.parametrize(
    ("query", "steps", "expected"),
    [
        ("In what year did the author of The Little Prince die?",
         [("Who wrote The Little Prince?", []), ("In which year was {q1} born?", ["q1"]),
          ("In which year was {q2} born?", ["q2"]), ("What is the year {q3}?", ["q3"])],
         [("q1", "Who is the author of The Little Prince?", ()),
          ("q2", "In what year did {q1} die?", ("q1",))]),
        ("What is the birth date of the wife of the actor who played Forrest Gump?",
         [("Who played Forrest Gump?", []), ("In which year was {q1} born?", ["q1"]),
          ("In which year was {q2} born?", ["q2"]), ("What is the birth date of {q3}?", ["q3"])],
         [("q1", "Who is the actor who played Forrest Gump?", ()),
          ("q2", "Who is the wife of {q1}?", ("q1",)),
          ("q3", "What is the birth date of {q2}?", ("q2",))]),
    ],
)  # fmt: skip
def test_a_chain_with_an_invented_hop_in_between_gets_its_phrasings_chain(
    query: str, steps: list[Step], expected: list[tuple[str, str, tuple[str, ...]]]
) -> None:
    result = repaired(query, *steps)
    assert shape(result) == expected
    assert "hop by hop" in result.repairs[-1]


@pytest.mark.parametrize(
    "steps",
    [
        # its hop in other words than the question's: as long as the phrasing's chain
        [("Which actor played Forrest Gump?", []), ("Who is the spouse of {q1}?", ["q1"]),
         ("When was {q2} born?", ["q2"])],
        # one hop more than the phrasing asks, but none asking what the question does not
        [("Which actor played Forrest Gump?", []), ("Who is the actor {q1}?", ["q1"]),
         ("Who is the wife of {q2}?", ["q2"]), ("What is the birth date of {q3}?", ["q3"])],
    ],
)  # fmt: skip
def test_a_chain_whose_hops_the_question_asks_is_left_to_the_model(steps: list[Step]) -> None:
    given = plan("What is the birth date of the wife of the actor who played Forrest Gump?", *steps)
    assert not any("hop by hop" in r for r in repair_plan(given).repairs)


def test_a_compositional_question_planned_with_a_hop_is_left_to_the_model() -> None:
    given = plan(
        "When was the person who shared the Nobel Prize in Physics in 1954 with Max Born born?",
        ("Who shared the Nobel Prize in Physics in 1954 with Max Born?", []),
        ("When was {q1} born?", ["q1"]),
    )
    assert repair_plan(given) == given


# --- good plans -----------------------------------------------------------------------------


def _has_data() -> bool:
    try:
        return resolve_data_dir().is_dir()
    except FileNotFoundError:
        return False


TEMPLATES = {
    "template_parallel": 1.0,
    "template_chain": 1.0,
    "template_fan_in": 1.0,
    "single_template": 1.0,
    "reference": 1.0,
    "multihop_chain": 1.0,
    "comparison": 1.0,
    "bridge": 1.0,
}


def test_gold_plans_of_the_template_pairs_are_left_alone() -> None:
    for pair in build_training_pairs(400, seed=3, mix=TEMPLATES):
        gold = pair.plan
        assert repair_plan(gold) == gold, pair.query


@pytest.mark.skipif(not _has_data(), reason="public benchmark data is not available")
def test_gold_plans_of_the_benchmark_pairs_are_left_alone() -> None:
    mix = {
        "benchmark": 1.0,
        "recomposed": 1.0,
        "math_chain": 1.0,
        "single_source": 1.0,
        "multihop_comparison": 1.0,
    }
    for pair in build_training_pairs(400, seed=0, mix=mix):
        gold = pair.plan
        assert repair_plan(gold) == gold, pair.query


def test_a_step_naming_an_answer_without_its_dependency_is_judged_as_dependent() -> None:
    # Linked only after the invented-step rules, it was kept once and removed on a second
    # repair (MultiExpertQA-All item 00000's plan).
    once = repaired(
        "What is 15% of 80, and who wrote Hamlet?",
        ("What is 15% of 80?", []),
        ("Now draw the diagram representing {q1}.", []),
    )
    assert [q for _, q, _ in shape(once)] == ["What is 15% of 80?", "Who wrote Hamlet?"]
    assert repair_plan(once) == once


def test_repair_is_idempotent() -> None:
    once = repaired(
        "What are the populations of France and Spain, and what is the difference between them?",
        ("What is the population of France?", []),
        ("What is the population of Spain?", []),
        ("What is the difference between them?", []),
    )
    assert repair_plan(once) == once


# --- in the generator -----------------------------------------------------------------------


def test_the_generator_repairs_the_models_plan() -> None:
    reply = json.dumps(
        {
            "sub_queries": [
                {"id": "q1", "question": "What is the atomic number of oxygen?", "depends_on": []},
                {"id": "q2", "question": "What is twice that number?", "depends_on": []},
            ]
        }
    )
    query = "What is the atomic number of oxygen, and what is twice that number?"
    result = SubQueryGenerator(llm=FakeListChatModel(responses=[reply])).invoke(query)
    assert shape(result)[-1] == ("q2", "What is twice {q1}?", ("q1",))
    raw = SubQueryGenerator(llm=FakeListChatModel(responses=[reply]), repair=False).invoke(query)
    assert shape(raw)[-1] == ("q2", "What is twice that number?", ())


def test_a_placeholder_without_dependency_is_no_longer_a_failed_reply() -> None:
    reply = json.dumps(
        {
            "sub_queries": [
                {"id": "q1", "question": "Who directed Jaws?", "depends_on": []},
                {"id": "q2", "question": "When was {q1} born?", "depends_on": []},
            ]
        }
    )
    llm = FakeListChatModel(responses=[reply])
    result = SubQueryGenerator(llm=llm).invoke("Who directed Jaws, and when was he born?")
    assert not result.is_fallback
    assert shape(result)[-1] == ("q2", "When was {q1} born?", ("q1",))


@pytest.mark.parametrize(
    ("follow_up", "steps"),
    [
        ("When was he born?", [("Who wrote Hamlet?", []), ("When was {q1} born?", ["q1"])]),
        ("And its capital?", [("What is the capital of Denmark?", [])]),
        ("How about Germany?", [("What is the capital of Germany?", [])]),
    ],
)
def test_a_follow_up_resolved_from_the_conversation_is_kept(
    follow_up: str, steps: list[Step]
) -> None:
    # The sub-queries name what the conversation said, not the follow-up's words: repair
    # reads them against the follow-up alone and must leave them as the model wrote them.
    reply = json.dumps(
        {
            "sub_queries": [
                {"id": f"q{i}", "question": q, "depends_on": d} for i, (q, d) in enumerate(steps, 1)
            ]
        }
    )
    history = [HumanMessage("Who wrote Hamlet? And tell me about Denmark."), AIMessage("...")]
    generator = SubQueryGenerator(llm=FakeListChatModel(responses=[reply]))
    result = generator.invoke(DecompositionInput(query=follow_up, history=history))
    assert shape(result) == shape(plan(follow_up, *steps)) and not result.repairs


def test_a_question_with_options_asked_only_partly_gets_the_users_text_not_a_hop() -> None:
    # The cut copy had a dependent (an invented hop) when miscopies were restored; once
    # that hop is removed, coverage must not complete a multiple-choice question with one.
    question = (
        "Which gas do plants absorb from the air during photosynthesis?\n"
        "A) Oxygen\nB) Carbon dioxide\nC) Nitrogen\nD) Helium"
    )
    result = repaired(
        f"I have two questions. First, {question}\nSecond, who wrote Hamlet?",
        ("Which gas do plants absorb from the air", []),
        ("A previous step found the result {q1}. Now multiply that result by 4 and add 20.",
         ["q1"]),
        ("Who wrote Hamlet?", []),
    )  # fmt: skip
    assert [(q, d) for _, q, d in shape(result)] == [(question, ()), ("Who wrote Hamlet?", ())]
    assert any("question with options" in r for r in result.repairs)
