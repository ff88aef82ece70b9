"""Training pairs for the Sub-query Generator: compound query -> compact plan JSON.

The paper trains its Sub-query Generator on a generated dataset; this module builds an
equivalent one, deterministically from a seed, out of two ingredients:

* the benchmark builder's **train** split (:func:`~langchain_complm.benchmarks.build_dataset`,
  never dev or test): its parallel and chain items with their gold plans, its source
  questions recomposed with other connectives into 2 to 4 parts, GSM8K problems chained
  with follow-up computations (``{q1}`` placeholders), and its source questions alone as
  single questions that must not be split;
* templates over small vocabularies: short independent questions joined in many ways,
  knowledge chains ("Who wrote X, and where was the author born?"), arithmetic chains of
  2 or 3 steps, fan-ins (q3 compares {q1} and {q2}), and single questions that contain
  "and" but ask one thing ("What is the difference between TCP and UDP?").

Source questions of the builder's splits are disjoint for a given seed, so training pairs
drawn from the train split of ``split_seed`` share no source question with
``build_dataset(..., "dev"|"test", seed=split_seed)``, nor with the multi-hop evaluation
sets of that seed. The split seed is separate from the draw ``seed`` and defaults to
:data:`SPLIT_SEED`, the one every evaluation set here is built with: another draw seed
gives other pairs from the same train split, never questions of an evaluation split.
Evaluate with the split seed (the trained model's metadata has it).

Pairs are drawn one by one from a seeded generator, so ``n`` pairs are a prefix of ``n + k``
(a learning curve over training-set sizes trains on nested sets).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from langchain_complm.decompose.phrasing import comparison_plan, multihop_kind
from langchain_complm.plan import Plan, SubQuery
from langchain_complm.prompts import TRAINED_DECOMPOSE_SYSTEM

PairKind = Literal[
    "benchmark",
    "recomposed",
    "math_chain",
    "template_parallel",
    "template_chain",
    "template_fan_in",
    "single_source",
    "single_template",
    "reference",
    "reference_lookalike",
    "multihop_chain",
    "comparison",
    "bridge",
    "multihop_comparison",
]

DEFAULT_MIX: dict[str, float] = {
    "benchmark": 0.08,
    "recomposed": 0.06,
    "math_chain": 0.05,
    "template_parallel": 0.15,
    "template_chain": 0.05,
    "template_fan_in": 0.03,
    "single_source": 0.09,
    "single_template": 0.10,
    "reference": 0.08,
    "reference_lookalike": 0.08,
    "multihop_chain": 0.08,
    "comparison": 0.05,
    "bridge": 0.05,
    "multihop_comparison": 0.05,
}
"""Expected share of each kind of pair (a kind whose source runs out is skipped)."""

SPLIT_SEED = 0
"""The builder's split that training sources come from by default: the seed the benchmark
and multi-hop evaluation sets are built with (``build_dataset`` and ``eval_examples``
default to it), so that no evaluation question is ever a training source."""

DEFAULT_BENCHMARK_ITEMS = 1200
"""Train items asked of the builder (fewer are used when the train split runs out)."""

DEFAULT_MAX_CHARS = 3000
"""Pairs whose query plus target is longer than this are skipped (sequence length)."""


class TrainingPair(BaseModel):
    """One supervised example: a user query and the plan the generator should write."""

    model_config = ConfigDict(frozen=True)

    query: str = Field(description="The user's (possibly compound) question.")
    target: str = Field(description='Compact plan JSON: {"sub_queries":[{id,question,...}]}')
    kind: str = Field(description="How the pair was made (see PairKind).")
    source_ids: tuple[str, ...] = Field(
        default=(), description="Ids of the benchmark source questions it uses."
    )

    @property
    def plan(self) -> Plan:
        """The target as a validated plan."""
        return target_to_plan(self.target, self.query)

    @property
    def n_sub_queries(self) -> int:
        return len(json.loads(self.target)["sub_queries"])

    @property
    def n_edges(self) -> int:
        return sum(len(s["depends_on"]) for s in json.loads(self.target)["sub_queries"])


# --- plan <-> target --------------------------------------------------------------------------


def plan_to_target(plan: Plan) -> str:
    """The compact JSON the generator is trained to write (no spaces, no routing)."""
    data = {
        "sub_queries": [
            {"id": sq.id, "question": sq.question, "depends_on": list(sq.depends_on)}
            for sq in plan.sub_queries
        ]
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def target_to_plan(target: str, query: str) -> Plan:
    """Parse a target written by :func:`plan_to_target` back into a validated plan."""
    data = json.loads(target)
    return Plan(
        query=query,
        sub_queries=tuple(
            SubQuery(id=s["id"], question=s["question"], depends_on=tuple(s["depends_on"]))
            for s in data["sub_queries"]
        ),
    ).validate_dag()


def chat_messages(query: str, target: str | None = None) -> list[dict[str, str]]:
    """The conversation of one pair in the training format (system, user, [assistant])."""
    messages = [
        {"role": "system", "content": TRAINED_DECOMPOSE_SYSTEM},
        {"role": "user", "content": query},
    ]
    if target is not None:
        messages.append({"role": "assistant", "content": target})
    return messages


def _pair(
    query: str, questions: Sequence[tuple[str, Sequence[str]]], kind: str, **kw: Any
) -> TrainingPair:
    """A pair from (question, depends_on) tuples with ids q1, q2, ... (validated)."""
    plan = Plan(
        query=query,
        sub_queries=tuple(
            SubQuery(id=f"q{i}", question=q, depends_on=tuple(deps))
            for i, (q, deps) in enumerate(questions, 1)
        ),
    ).validate_dag()
    return TrainingPair(query=query, target=plan_to_target(plan), kind=kind, **kw)


# --- vocabularies -----------------------------------------------------------------------------

_WORKS = (
    "Pride and Prejudice", "War and Peace", "One Hundred Years of Solitude", "Don Quixote",
    "The Old Man and the Sea", "Moby-Dick", "Things Fall Apart", "The Trial", "Beloved",
    "Crime and Punishment", "The Great Gatsby", "Frankenstein", "Madame Bovary", "Ulysses",
    "The Tale of Genji", "Middlemarch", "The Name of the Rose", "Hamlet", "Faust", "Dracula",
)  # fmt: skip
_FILMS = (
    "Jaws", "Casablanca", "Vertigo", "Seven Samurai", "Parasite", "Amelie", "Alien",
    "Metropolis", "Rashomon", "The Godfather", "Spirited Away", "Psycho", "Titanic",
    "Pulp Fiction", "Goodfellas", "Inception", "Roma", "Chinatown",
)  # fmt: skip
_COUNTRIES = (
    "France", "Japan", "Brazil", "Kenya", "Canada", "Australia", "Egypt", "Peru", "Norway",
    "India", "Mexico", "Vietnam", "Argentina", "Poland", "Nigeria", "Turkey", "Chile",
    "Indonesia", "Spain", "Germany", "Thailand", "Morocco", "Sweden", "Ghana",
)  # fmt: skip
_SYMBOLS = ("Fe", "Na", "K", "Au", "Ag", "Pb", "Hg", "Sn", "Cu", "W", "Zn", "Ca", "Mg", "Ni")
_PAINTINGS = (
    "The Starry Night", "Guernica", "The Persistence of Memory", "The Night Watch",
    "Girl with a Pearl Earring", "The Scream", "Las Meninas", "The Birth of Venus",
    "Water Lilies", "The Garden of Earthly Delights", "American Gothic",
)  # fmt: skip
_LANDMARKS = (
    "Machu Picchu", "the Alhambra", "Angkor Wat", "the Acropolis", "Petra", "Uluru",
    "the Taj Mahal", "Chichen Itza", "the Colosseum", "Mount Kilimanjaro", "Table Mountain",
    "the Great Barrier Reef", "Stonehenge", "Neuschwanstein Castle",
)  # fmt: skip
_PEOPLE = (
    "Marie Curie", "Isaac Newton", "Ada Lovelace", "Charles Darwin", "Nelson Mandela",
    "Frida Kahlo", "Alan Turing", "Simon Bolivar", "Rosalind Franklin", "Leonardo da Vinci",
    "Mahatma Gandhi", "Albert Einstein", "Florence Nightingale", "Confucius", "Cleopatra",
)  # fmt: skip
_SUBSTANCES = ("water", "ethanol", "mercury", "nitrogen", "iron", "table salt", "acetone")
_DISEASES = (
    "iron-deficiency anemia", "type 2 diabetes", "asthma", "migraine", "hypothyroidism",
    "pneumonia", "gout", "malaria", "celiac disease", "Lyme disease", "appendicitis",
)  # fmt: skip
_DRUGS = ("metformin", "ibuprofen", "amoxicillin", "warfarin", "atorvastatin", "lisinopril")
_LAW_TERMS = (
    "a tort", "habeas corpus", "adverse possession", "a class action", "double jeopardy",
    "mens rea", "an easement", "promissory estoppel", "hearsay", "strict liability",
)  # fmt: skip
_CS_TERMS = (
    "a hash table", "recursion", "a deadlock", "Big-O notation", "a binary search tree",
    "garbage collection", "a race condition", "public-key cryptography", "a REST API",
    "dynamic programming", "a compiler", "virtual memory",
)  # fmt: skip
_PHYSICS_TERMS = (
    "Newton's second law", "the photoelectric effect", "entropy", "Ohm's law",
    "the Doppler effect", "Hooke's law", "special relativity", "buoyancy", "half-life",
)  # fmt: skip
_EVENTS = (
    "World War I", "the French Revolution", "the fall of the Berlin Wall", "the Meiji",
    "the American Civil War", "the Russian Revolution", "the Black Death", "the Renaissance",
    "the Cuban Missile Crisis", "the Industrial Revolution", "the Protestant Reformation",
)  # fmt: skip
_PAIRS = (
    ("mitosis", "meiosis"), ("TCP", "UDP"), ("weather", "climate"), ("a virus", "a bacterium"),
    ("a felony", "a misdemeanor"), ("speed", "velocity"), ("mass", "weight"),
    ("RAM", "ROM"), ("a stack", "a queue"), ("civil law", "criminal law"), ("DNA", "RNA"),
    ("an arrest", "a detention"), ("heat", "temperature"), ("a compiler", "an interpreter"),
    ("type 1 diabetes", "type 2 diabetes"), ("an asset", "a liability"), ("socialism",
    "communism"), ("an acid", "a base"), ("AC", "DC"), ("HTTP", "HTTPS"),
)  # fmt: skip


def _short_question(rng: random.Random) -> str:
    """One short, self-contained question from a random domain."""
    a, b = rng.randint(2, 99), rng.randint(2, 999)
    makers: tuple[Callable[[], str], ...] = (
        lambda: f"What is the capital of {rng.choice(_COUNTRIES)}?",
        lambda: f"What is {rng.choice((5, 10, 12, 15, 20, 25, 30, 40, 75))}% of {b}?",
        lambda: f"What is {a} times {rng.randint(2, 99)}?",
        lambda: f"What is the square root of {rng.randint(2, 30) ** 2}?",
        lambda: f"Who wrote {rng.choice(_WORKS)}?",
        lambda: f"Who directed the film {rng.choice(_FILMS)}?",
        lambda: f"What are the common symptoms of {rng.choice(_DISEASES)}?",
        lambda: f"How is {rng.choice(_DISEASES)} usually treated?",
        lambda: f"What are the main side effects of {rng.choice(_DRUGS)}?",
        lambda: f"What is {rng.choice(_LAW_TERMS)} in law?",
        lambda: f"What is {rng.choice(_CS_TERMS)}?",
        lambda: f"Explain {rng.choice(_PHYSICS_TERMS)}.",
        lambda: f"When did {rng.choice(_EVENTS)} begin?",
        lambda: f"What were the main causes of {rng.choice(_EVENTS)}?",
        lambda: f"What is the boiling point of {rng.choice(_SUBSTANCES)}?",
        lambda: f"Which element has the chemical symbol {rng.choice(_SYMBOLS)}?",
        lambda: f"Where is {rng.choice(_LANDMARKS)}?",
        lambda: f"What is {rng.choice(_PEOPLE)} best known for?",
        lambda: f"Who painted {rng.choice(_PAINTINGS)}?",
        lambda: f"Solve for x: {a}x + {rng.randint(1, 50)} = {b}.",
        lambda: f"Convert {b} kilometres to miles.",
        lambda: f"What is the time complexity of binary search on {b} sorted items?",
    )
    return rng.choice(makers)()


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _strip_end(text: str) -> str:
    return text.rstrip(" ?.!")


def _join_short(rng: random.Random, questions: Sequence[str]) -> str:
    """Join short questions into one user query with a random connective."""
    k = len(questions)
    q = list(questions)
    forms: list[Callable[[], str]] = [
        lambda: " ".join(q),
        lambda: "\n".join(f"{i}. {x}" for i, x in enumerate(q, 1)),
        lambda: "\n".join(f"- {x}" for x in q),
        lambda: " ".join(f"({i}) {x}" for i, x in enumerate(q, 1)),
        lambda: f"I have {k} questions. " + " ".join(q),
        lambda: "Please answer: " + " ".join(q),
        lambda: q[0] + " " + " ".join("Also, " + _lower_first(x) for x in q[1:]),
        lambda: ", ".join(_strip_end(x) for x in q[:-1]) + ", and " + _lower_first(q[-1]),
        lambda: "; ".join(_strip_end(x) for x in q[:-1]) + "; " + _lower_first(q[-1]),
        lambda: "Tell me the following. " + " ".join(q),
        lambda: "Quick questions: " + " ".join(q),
    ]
    if k == 2:
        forms += [
            lambda: _strip_end(q[0]) + " and " + _lower_first(q[1]),
            lambda: f"{q[0]} And {_lower_first(q[1])}",
            lambda: f"Two things: {q[0]} {q[1]}",
            lambda: f"{q[0]} Besides that, {_lower_first(q[1])}",
        ]
    return rng.choice(forms)()


def _join_long(rng: random.Random, texts: Sequence[str]) -> str:
    """Join long benchmark questions (with options) with other connectives than the builder's."""
    k = len(texts)
    ordinals = ("First", "Second", "Third", "Fourth")
    words = {2: "two", 3: "three", 4: "four"}
    forms: list[Callable[[], str]] = [
        lambda: "\n\n".join(texts),
        lambda: "\n\n".join(f"Part {i}:\n{t}" for i, t in enumerate(texts, 1)),
        lambda: "\n".join(f"{i}) {t}" for i, t in enumerate(texts, 1)),
        lambda: f"Help me with these {words[k]} questions:\n" + "\n".join(f"- {t}" for t in texts),
        lambda: "\n".join(f"{ordinals[i]} question: {t}" for i, t in enumerate(texts)),
        lambda: f"{texts[0]}\n" + "\n".join(f"Also: {t}" for t in texts[1:]),
        lambda: (
            f"Please solve all {words[k]}.\n"
            + "\n".join(f"[{i}] {t}" for i, t in enumerate(texts, 1))
        ),
    ]
    return rng.choice(forms)()


# --- generators of each kind ------------------------------------------------------------------


class _Sources:
    """The builder's train items (of ``split_seed``'s split), their source parts shuffled
    with ``seed``, and what has been used."""

    def __init__(self, seed: int, split_seed: int, data_dir: Any, n_items: int) -> None:
        from langchain_complm.evaluation.multiexpertqa import build_dataset

        items = None
        n = n_items
        while items is None and n >= 10:  # n_items 0: templates only, no data needed
            try:
                items = build_dataset(
                    "multiexpertqa-all", "train", n, seed=split_seed, data_dir=data_dir
                )
            except ValueError:  # the train split ran out of some domain
                n = int(n * 0.9)
        self.items = [i for i in items or [] if i.gold_plan is not None]
        self.parts = [
            part for item in self.items for part in item.parts if part.source != "synthetic"
        ]
        self.math = [p for p in self.parts if p.source == "gsm8k"]
        self.non_math = [p for p in self.parts if p.source != "gsm8k"]
        rng = random.Random(f"complm-train-sources:{seed}")
        rng.shuffle(self.parts)
        self._item_iter = iter(self.items)
        self._single_iter = iter(list(self.parts))
        self._comparison_iter = iter(self._comparisons(split_seed, data_dir) if items else ())

    @staticmethod
    def _comparisons(seed: int, data_dir: Any) -> list[str]:
        """Comparison questions of the multi-hop train split (never the test split that
        the multi-hop evaluation draws from)."""
        from langchain_complm.evaluation.multiexpertqa import split_sources

        records = split_sources("general", "train", seed, data_dir)
        return [r.question for r in records if multihop_kind(r.question) == "comparison"]

    def next_comparison(self) -> str | None:
        return next(self._comparison_iter, None)

    def next_item(self) -> Any:
        return next(self._item_iter, None)

    def next_single(self) -> Any:
        return next(self._single_iter, None)


def _benchmark(rng: random.Random, src: _Sources) -> TrainingPair | None:
    item = src.next_item()
    if item is None:
        return None
    assert item.gold_plan is not None
    return TrainingPair(
        query=item.question,
        target=plan_to_target(item.gold_plan),
        kind="benchmark",
        source_ids=tuple(p.source_id for p in item.parts if p.source != "synthetic"),
    )


def _recomposed(rng: random.Random, src: _Sources) -> TrainingPair | None:
    if len(src.parts) < 4:
        return None
    k = rng.choice((2, 2, 3, 3, 4))
    parts = rng.sample(src.parts, k)
    texts = [p.prompt for p in parts]
    return _pair(
        _join_long(rng, texts),
        [(t, ()) for t in texts],
        "recomposed",
        source_ids=tuple(p.source_id for p in parts),
    )


# Follow-ups on a previous numeric result: (user phrasing, canonical instruction). The
# canonical sub-question is the builder's: "A previous step found the result {qN}. Now ...".
_MATH_FOLLOW_UPS: tuple[tuple[str, str], ...] = (
    ("Double that answer and add {b}.", "multiply that result by 2 and add {b}"),
    ("Then multiply the answer by {a}.", "multiply that result by {a}"),
    ("Take the result, add {b}, and multiply by {a}.", "add {b} to that result and multiply "
     "the sum by {a}"),
    ("Subtract {b} from your answer.", "subtract {b} from that result"),
    ("What is that number times {a} minus {b}?", "multiply that result by {a} and subtract {b}"),
    ("Next, multiply that result by {a} and add {b}. What number do you get?",
     "multiply that result by {a} and add {b}"),
    ("After that, subtract {b} from that result and multiply the difference by {a}.",
     "subtract {b} from that result and multiply the difference by {a}"),
    ("Finally, what is the square of that answer?", "square that result"),
)  # fmt: skip


def _math_chain(rng: random.Random, src: _Sources) -> TrainingPair | None:
    if not src.math:
        return None
    problem = rng.choice(src.math)
    user, canonical = rng.choice(_MATH_FOLLOW_UPS)
    a, b = rng.randint(2, 9), rng.randint(1, 20)
    steps: list[tuple[str, Sequence[str]]] = [
        (problem.question, ()),
        (
            f"A previous step found the result {{q1}}. Now {canonical.format(a=a, b=b)}. "
            "What number do you get?",
            ("q1",),
        ),
    ]
    query = f"{problem.question} {user.format(a=a, b=b)}"
    ids = [problem.source_id]
    if rng.random() < 0.4 and src.non_math:
        other = rng.choice(src.non_math)
        ids.append(other.source_id)
        if rng.random() < 0.5:
            query = _join_long(rng, [query, other.prompt])
            steps.append((other.prompt, ()))
        else:
            query = _join_long(rng, [other.prompt, query])
            steps = [
                (other.prompt, ()),
                (problem.question, ()),
                (steps[1][0].replace("{q1}", "{q2}"), ("q2",)),
            ]
    return _pair(query, steps, "math_chain", source_ids=tuple(ids))


def _template_parallel(rng: random.Random, src: _Sources) -> TrainingPair:
    k = rng.choice((2, 2, 2, 3, 3, 4))
    questions: list[str] = []
    while len(questions) < k:
        q = _short_question(rng)
        if q not in questions:
            questions.append(q)
    query = _vary(rng, _join_short(rng, questions))
    return _pair(query, [(q, ()) for q in questions], "template_parallel")


# Knowledge chains: (first question, follow-up on {q1}, ways to ask both at once).
_CHAINS: tuple[tuple[tuple[str, ...], str, str, tuple[str, ...]], ...] = (
    (_WORKS, "Who wrote {x}?", "Where was {q1} born?",
     ("Who wrote {x}, and where was the author born?", "Where was the author of {x} born?",
      "Find who wrote {x}, then tell me where that person was born.")),
    (_FILMS, "Who directed the film {x}?", "In which year was {q1} born?",
     ("Who directed {x}, and in which year was that director born?",
      "In what year was the director of {x} born?")),
    (_COUNTRIES, "What is the capital of {x}?", "What is the population of {q1}?",
     ("What is the population of the capital of {x}?",
      "Name the capital of {x} and give its population.")),
    (_SYMBOLS, "Which element has the chemical symbol {x}?", "What is the atomic number of {q1}?",
     ("What is the atomic number of the element with symbol {x}?",
      "Which element is {x}, and what is its atomic number?")),
    (_PAINTINGS, "Who painted {x}?", "Which art movement is {q1} associated with?",
     ("Which art movement is the painter of {x} associated with?",
      "Who painted {x}? And which art movement is that painter associated with?")),
    (_LANDMARKS, "In which country is {x}?", "What is the official language of {q1}?",
     ("What is the official language of the country where {x} is?",
      "Which country is {x} in, and what language is spoken there officially?")),
    (_PEOPLE, "In which country was {x} born?", "What is the capital of {q1}?",
     ("What is the capital of the country where {x} was born?",
      "Where was {x} born? Then name the capital of that country.")),
    (_DISEASES, "Which drug is most commonly prescribed first for {x}?",
     "What are the main side effects of {q1}?",
     ("What are the side effects of the usual first-line drug for {x}?",
      "Which drug is usually prescribed first for {x}, and what are its side effects?")),
    (_EVENTS, "In which year did {x} begin?", "Who was the head of state of France in {q1}?",
     ("Who led France in the year {x} began?",)),
)  # fmt: skip


def _arith_chain(rng: random.Random) -> tuple[str, list[tuple[str, Sequence[str]]]]:
    a, b, c, d = (rng.randint(2, 60) for _ in range(4))
    op1 = rng.choice((("plus", "the sum of {a} and {b}"), ("times", "the product of {a} and {b}")))
    first = f"What is {a} {op1[0]} {b}?"
    if rng.random() < 0.5:
        query = rng.choice(
            (
                f"Compute {op1[1]}, then multiply the result by {c}.",
                f"What is {a} {op1[0]} {b}, and what is that multiplied by {c}?",
                f"Take {op1[1]} and multiply it by {c}.",
            )
        ).format(a=a, b=b)
        return query, [(first, ()), (f"What is {{q1}} multiplied by {c}?", ("q1",))]
    query = rng.choice(
        (
            f"Compute {op1[1]}, multiply the result by {c}, then subtract {d}.",
            f"Start from {a} {op1[0]} {b}; multiply that by {c}; finally subtract {d}.",
            f"What is {a} {op1[0]} {b}? Multiply it by {c} and then subtract {d} from it.",
        )
    ).format(a=a, b=b)
    return query, [
        (first, ()),
        (f"What is {{q1}} multiplied by {c}?", ("q1",)),
        (f"What is {{q2}} minus {d}?", ("q2",)),
    ]


_MOST_PARTS = 5
"""The longest plan the data teaches (a bridge: two lookups, two hops, a comparison)."""

_PLACEHOLDER_ID = re.compile(r"\{q(\d+)\}")


def _beside(
    rng: random.Random, query: str, steps: list[tuple[str, Sequence[str]]], share: float
) -> tuple[str, list[tuple[str, Sequence[str]]]]:
    """With probability ``share``, an independent short question joined before or after the
    query's parts: plans that end with, or start with, a part nothing depends on, so a
    dependent last step is not what every multi-part plan looks like."""
    if rng.random() >= share or len(steps) >= _MOST_PARTS:
        return query, steps
    extra = _short_question(rng)
    if rng.random() < 0.6:
        return _join_short(rng, [query, extra]), [*steps, (extra, ())]
    shifted = [
        (
            _PLACEHOLDER_ID.sub(lambda m: f"{{q{int(m.group(1)) + 1}}}", q),
            tuple(f"q{int(d[1:]) + 1}" for d in deps),
        )
        for q, deps in steps
    ]
    return _join_short(rng, [extra, query]), [(extra, ()), *shifted]


def _template_chain(rng: random.Random, src: _Sources) -> TrainingPair:
    if rng.random() < 0.3:
        query, steps = _arith_chain(rng)
    else:
        vocab, first, then, asks = rng.choice(_CHAINS)
        x = rng.choice(vocab)
        query = rng.choice(asks).format(x=x)
        steps = [(first.format(x=x), ()), (then, ("q1",))]
    query, steps = _beside(rng, query, steps, 0.3)
    return _pair(query, steps, "template_chain")


_FAN_INS: tuple[tuple[tuple[str, ...], str, str, tuple[str, ...]], ...] = (
    (_COUNTRIES, "What is the population of {x}?", "Which is larger: {q1} or {q2}?",
     ("Which has more people, {x} or {y}?", "Is the population of {x} larger than that of {y}?")),
    (_PEOPLE, "In which year was {x} born?", "How many years are there between {q1} and {q2}?",
     ("How many years apart were {x} and {y} born?",
      "What is the difference between the birth years of {x} and {y}?")),
    (_FILMS, "In which year was the film {x} released?", "Which year is earlier: {q1} or {q2}?",
     ("Which came out first, {x} or {y}?", "Was {x} released before {y}?")),
    (_COUNTRIES, "What is the area of {x} in square kilometres?",
     "What is the ratio of {q1} to {q2}?",
     ("How many times larger in area is {x} than {y}?",)),
)  # fmt: skip


def _template_fan_in(rng: random.Random, src: _Sources) -> TrainingPair:
    vocab, each, combine, asks = rng.choice(_FAN_INS)
    x, y = rng.sample(vocab, 2)
    steps = [(each.format(x=x), ()), (each.format(x=y), ()), (combine, ("q1", "q2"))]
    return _pair(rng.choice(asks).format(x=x, y=y), steps, "template_fan_in")


def _single_source(rng: random.Random, src: _Sources) -> TrainingPair | None:
    part = src.next_single()
    if part is None:
        return None
    return _pair(part.prompt, [(part.prompt, ())], "single_source", source_ids=(part.source_id,))


def _single_template(rng: random.Random, src: _Sources) -> TrainingPair:
    x, y = rng.choice(_PAIRS)
    a, b = rng.randint(2, 500), rng.randint(2, 500)
    makers: tuple[Callable[[], str], ...] = (
        lambda: f"What is the difference between {x} and {y}?",
        lambda: f"How are {x} and {y} related?",
        lambda: f"Compare {x} and {y}.",
        lambda: f"Explain the relationship between {x} and {y}.",
        lambda: f"What do {x} and {y} have in common?",
        lambda: f"What is the sum of {a} and {b}?",
        lambda: f"What is the product of {a} and {b}?",
        lambda: f"What is the greatest common divisor of {a} and {b}?",
        lambda: f"How many integers are there between {min(a, b)} and {max(a, b)}?",
        lambda: f"What is the average of {a}, {b} and {rng.randint(2, 500)}?",
        lambda: "Who founded Procter and Gamble?",
        lambda: f"What is the main theme of {rng.choice(_WORKS)}?",
        lambda: f"Why did {rng.choice(_EVENTS)} happen, in short?",
        lambda: f"Describe the symptoms and treatment of {rng.choice(_DISEASES)}.",
        lambda: f"What are the pros and cons of {rng.choice(_CS_TERMS)}?",
        lambda: f"Summarize the life and work of {rng.choice(_PEOPLE)}.",
        lambda: (
            f"A train travels {a} km at {rng.randint(40, 120)} km/h and then stops. "
            "How long was it moving?"
        ),
        lambda: f"Tom has {a} apples and buys {b} more. How many apples does he have now?",
        lambda: f"Is {x} the same as {y}?",
        lambda: _short_question(rng),
        lambda: _self_contained(rng),
    )
    q = rng.choice(makers)()
    return _pair(_vary(rng, q), [(q, ())], "single_template")


# --- what real questions do: references, multi-hop chains, comparisons ------------------------
#
# The kinds below teach what the first templates did not: a later part that refers to an
# earlier answer in words ("twice that number", "that organ", "between them") becomes a
# dependency with a placeholder; a nested question ("the X of the Y of Z") becomes a chain of
# lookups, innermost first; a comparison looks each item up on its own, then compares; a
# bridge comparison finds each item's related entity first. Vocabularies are their own (the
# held-out evaluation questions were written apart from them), and every query may be
# re-cased, re-punctuated or prefixed (:func:`_vary`): the sub-queries stay clean.

_ORGANS = (
    ("pumps blood through the body", "heart"), ("filters the blood", "kidneys"),
    ("stores bile", "gallbladder"), ("produces bile", "liver"),
    ("controls the body's balance", "cerebellum"), ("absorbs most nutrients", "small intestine"),
    ("exchanges oxygen and carbon dioxide", "lungs"), ("produces red blood cells", "bone marrow"),
)  # fmt: skip
_ELEMENTS = (
    "hydrogen", "helium", "carbon", "nitrogen", "neon", "sodium", "magnesium", "aluminium",
    "silicon", "sulfur", "chlorine", "argon", "potassium", "calcium", "titanium", "chromium",
    "manganese", "cobalt", "nickel", "zinc", "bromine", "krypton", "iodine", "xenon",
    "platinum", "uranium",
)  # fmt: skip
_SHAPES = ("a pentagon", "an octagon", "a triangle", "a cube", "a square", "a decagon")
_ANIMALS = ("an ant", "a crab", "an octopus", "a horse", "a starfish", "a scorpion", "a bee")
_CITIES = (
    "Lyon", "Osaka", "Porto", "Krakow", "Seville", "Munich", "Toronto", "Melbourne", "Cusco",
    "Mombasa", "Bergen", "Kyoto", "Marseille", "Valparaiso", "Izmir", "Accra", "Fez", "Hue",
)  # fmt: skip
_COMPANIES = (
    "Nokia", "Volvo", "Siemens", "Lego", "Nintendo", "Ikea", "Adidas", "Heineken", "Samsung",
    "Philips", "Michelin", "Spotify",
)  # fmt: skip
_SONGS = (
    "Hey Jude", "Bohemian Rhapsody", "Like a Rolling Stone", "Respect", "Hotel California",
    "Smells Like Teen Spirit", "Purple Rain", "Dancing Queen",
)  # fmt: skip

# A relation: what it is asked about (type), what it yields (type), its question with {x},
# and noun phrases that name its answer inside a longer question.
_Relation = tuple[str, str, str, tuple[str, ...]]
_RELATIONS: tuple[_Relation, ...] = (
    ("film", "person", "Who directed {x}?",
     ("the director of {x}", "the person who directed {x}", "{x}'s director")),
    ("work", "person", "Who wrote {x}?",
     ("the author of {x}", "the writer of {x}", "the person who wrote {x}")),
    ("painting", "person", "Who painted {x}?",
     ("the painter of {x}", "the artist who painted {x}")),
    ("song", "person", "Who performed the song {x}?",
     ("the performer of the song {x}", "the singer of {x}")),
    ("company", "person", "Who founded {x}?", ("the founder of {x}", "the person who founded {x}")),
    ("person", "city", "In which city was {x} born?",
     ("the birthplace of {x}", "the city where {x} was born", "{x}'s birthplace")),
    ("person", "person", "Who was the spouse of {x}?", ("the spouse of {x}", "{x}'s spouse")),
    ("company", "city", "In which city is {x} headquartered?",
     ("the headquarters city of {x}", "the city where {x} is headquartered")),
    ("city", "country", "In which country is {x}?",
     ("the country where {x} is", "the country that {x} is in")),
    ("landmark", "country", "In which country is {x}?", ("the country where {x} is located",)),
    ("country", "city", "What is the capital of {x}?", ("the capital of {x}", "{x}'s capital")),
    ("country", "person", "Who is the head of state of {x}?", ("the head of state of {x}",)),
    ("city", "number", "What is the population of {x}?", ()),
    ("country", "language", "What is the official language of {x}?", ()),
    ("country", "currency", "What is the currency of {x}?", ()),
    ("person", "year", "In which year was {x} born?", ()),
    ("person", "year", "In which year did {x} die?", ()),
    ("person", "country", "What was the nationality of {x}?", ()),
    ("city", "number", "What is the elevation of {x}?", ()),
)  # fmt: skip
"""Relations for multi-hop chains; those without noun phrases only end a chain."""

_ENTITIES: dict[str, tuple[str, ...]] = {
    "film": tuple(f"the film {f}" for f in _FILMS),
    "work": _WORKS,
    "painting": _PAINTINGS,
    "song": _SONGS,
    "company": _COMPANIES,
    "person": _PEOPLE,
    "city": _CITIES,
    "landmark": _LANDMARKS,
    "country": _COUNTRIES,
}


def _vary(rng: random.Random, query: str) -> str:
    """The query as users type it: casing, punctuation, a lead-in or a sign-off."""
    forms: tuple[Callable[[str], str], ...] = (
        lambda q: q,
        lambda q: q,
        lambda q: q,
        lambda q: q.lower(),
        lambda q: q.rstrip("?.! "),
        lambda q: q.rstrip("?") + "??",
        lambda q: f"Q: {q}",
        lambda q: f"Quick question - {_lower_first(q)}",
        lambda q: f"{q} Thanks!",
        lambda q: f"hey, {_lower_first(q)}",
        lambda q: f"Can you tell me: {_lower_first(q)}",
        lambda q: " ".join(q.split()).replace(", ", " , ") if rng.random() < 0.3 else q,
        lambda q: q.upper() if len(q) < 90 else q,
    )
    return rng.choice(forms)(query)


def _chain_path(rng: random.Random, hops: int) -> tuple[str, list[_Relation]] | None:
    """A start entity and ``hops`` relations whose types line up, none twice in a row; all
    but the last can be named by a noun phrase."""
    start_type = rng.choice(list(_ENTITIES))
    path: list[_Relation] = []
    current = start_type
    for hop in range(hops):
        last = hop == hops - 1
        options = [
            r
            for r in _RELATIONS
            if r[0] == current and (last or r[3]) and (not path or r is not path[-1])
        ]
        if not options:
            return None
        relation = rng.choice(options)
        path.append(relation)
        current = relation[1]
    return rng.choice(_ENTITIES[start_type]), path


def _multihop_chain(rng: random.Random, src: _Sources) -> TrainingPair | None:
    path = None
    while path is None:
        path = _chain_path(rng, rng.choice((2, 2, 2, 3, 3, 4)))
    entity, relations = path
    phrase = entity
    for relation in relations[:-1]:
        # "X's director" reads well for a name, not for a phrase of its own.
        forms = [f for f in relation[3] if phrase == entity or not f.startswith("{x}'s")]
        phrase = rng.choice(forms).format(x=phrase)
    query = relations[-1][2].format(x=phrase)
    query = query[0].upper() + query[1:]
    steps: list[tuple[str, Sequence[str]]] = [(relations[0][2].format(x=entity), ())]
    for i, relation in enumerate(relations[1:], start=1):
        steps.append((relation[2].format(x=f"{{q{i}}}"), (f"q{i}",)))
    query, steps = _beside(rng, query, steps, 0.2)
    return _pair(_vary(rng, query), steps, "multihop_chain")


# (question about an earlier answer, ways to ask it in words). The answer of q1 is referred
# to as the user would; the sub-query names it with the placeholder.
_NUMERIC_FIRSTS: tuple[Callable[[random.Random], str], ...] = (
    lambda rng: f"What is the atomic number of {rng.choice(_ELEMENTS)}?",
    lambda rng: f"How many sides does {rng.choice(_SHAPES)} have?",
    lambda rng: f"How many legs does {rng.choice(_ANIMALS)} have?",
    lambda rng: f"What is {rng.randint(3, 40)} times {rng.randint(3, 40)}?",
    lambda rng: f"What is {rng.randint(10, 500)} plus {rng.randint(10, 500)}?",
    lambda rng: (
        f"How many days are in {rng.choice(('a week', 'a year', 'February', 'a fortnight'))}?"
    ),
    lambda rng: f"What is the population of {rng.choice(_CITIES)}?",
    lambda rng: f"In which year was {rng.choice(_PEOPLE)} born?",
)
_NUMERIC_FOLLOW_UPS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("what is twice that number?", "double it.", "what is double that?"), "What is 2 times {q}?"),
    (("what is that plus {n}?", "add {n} to it.", "what do you get if you add {n} to that?"),
     "What is {q} plus {n}?"),
    (("multiply the result by {n}.", "what is that number times {n}?", "times {n}?"),
     "What is {q} multiplied by {n}?"),
    (("subtract {n} from it.", "what is that minus {n}?", "take away {n} from the result."),
     "What is {q} minus {n}?"),
    (("what is half of that?", "halve it.", "divide that by 2."), "What is {q} divided by 2?"),
    (("is that more than {n}?", "is the result larger than {n}?"), "Is {q} more than {n}?"),
    (("what is the square of that value?", "square it."), "What is {q} squared?"),
)  # fmt: skip
_JOINS: tuple[Callable[[str, str], str], ...] = (
    lambda a, b: f"{a.rstrip('?')}, and {b}",
    lambda a, b: f"{a} Then {b}",
    lambda a, b: f"{a} And {b}",
    lambda a, b: f"{a} {b[:1].upper()}{b[1:]}",
    lambda a, b: f"{a.rstrip('?')}; {b}",
    lambda a, b: f"{a} After that, {b}",
)


def _reference(rng: random.Random, src: _Sources) -> TrainingPair:
    """A question and a follow-up that refers to its answer in words."""
    choice = rng.random()
    if choice < 0.2:
        return _plural_reference(rng)
    if choice < 0.6:
        first = rng.choice(_NUMERIC_FIRSTS)(rng)
        asks, canonical = rng.choice(_NUMERIC_FOLLOW_UPS)
        n = rng.randint(2, 50)
        follow, second = rng.choice(asks).format(n=n), canonical.format(q="{q1}", n=n)
    else:
        first, follow, second = _entity_reference(rng)
    query = rng.choice(_JOINS)(first, follow)
    steps: list[tuple[str, Sequence[str]]] = [(first, ()), (second, ("q1",))]
    query, steps = _beside(rng, query, steps, 0.3)
    return _pair(_vary(rng, query), steps, "reference")


_BUILT = tuple(
    x
    for x in _LANDMARKS
    if x not in {"Uluru", "Mount Kilimanjaro", "Table Mountain", "the Great Barrier Reef"}
)


def _self_contained(rng: random.Random) -> str:
    """A question with the words a reference would use ("it", "them", "the difference",
    "the sum", "which is bigger") that names everything it asks about itself."""
    x, y = rng.choice(_PAIRS)
    a, b = rng.sample(range(2, 999), 2)
    term = rng.choice((*_CS_TERMS, *_PHYSICS_TERMS))
    makers: tuple[Callable[[], str], ...] = (
        lambda: f"What is the difference between {x} and {y}?",
        lambda: f"How do {x} and {y} differ from each other?",
        lambda: f"What is the sum of {a} and {b}?",
        lambda: f"What is the difference between {a} and {b}?",
        lambda: f"Which is bigger, {a} or {b}?",
        lambda: f"Is {a} larger than {b}?",
        lambda: f"What is {term}, and how does it work?",
        lambda: f"What is {term} and why does it matter?",
        lambda: f"Who wrote {rng.choice(_WORKS)}, and when was it first published?",
        lambda: f"What is {rng.choice(_DISEASES)} and how is it diagnosed?",
        lambda: f"What causes {rng.choice(_DISEASES)}, and can it be prevented?",
        lambda: f"Where is {rng.choice(_BUILT)} and when was it built?",
    )
    return rng.choice(makers)()


def _reference_lookalike(rng: random.Random, src: _Sources) -> TrainingPair:
    """Independent parts, one or more of which uses reference words about what it names itself
    ("..., and what is the difference between TCP and UDP?"): nothing depends on anything."""
    k = rng.choice((2, 2, 3))
    questions = [_self_contained(rng)]
    while len(questions) < k:
        q = rng.choice((_short_question, _self_contained))(rng)
        if q not in questions:
            questions.append(q)
    rng.shuffle(questions)
    query = _vary(rng, _join_short(rng, questions))
    return _pair(query, [(q, ()) for q in questions], "reference_lookalike")


def _entity_reference(rng: random.Random) -> tuple[str, str, str]:
    """(first question, follow-up in words, follow-up with {q1}) about an entity answer."""
    function, _ = rng.choice(_ORGANS)
    options: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
        (f"Which organ {function}?",
         (("how much does that organ weigh?", "How much does {q1} weigh?"),
          ("how much does it weigh?", "How much does {q1} weigh?"),
          ("what diseases affect that organ?", "What diseases affect {q1}?"))),
        (f"Who wrote {rng.choice(_WORKS)}?",
         (("where was that author born?", "Where was {q1} born?"),
          ("where was the writer born?", "Where was {q1} born?"),
          ("what else did that author write?", "What else did {q1} write?"))),
        (f"Who directed the film {rng.choice(_FILMS)}?",
         (("what other films did that director make?", "What other films did {q1} direct?"),
          ("when was he born?", "When was {q1} born?"))),
        (f"What is the capital of {rng.choice(_COUNTRIES)}?",
         (("what is its population?", "What is the population of {q1}?"),
          ("how many people live in that city?", "What is the population of {q1}?"),
          ("what river runs through it?", "What river runs through {q1}?"))),
        (f"In which country was {rng.choice(_PEOPLE)} born?",
         (("what is the official language of that country?",
           "What is the official language of {q1}?"),
          ("what language is spoken there?", "What is the official language of {q1}?"))),
        (f"Which element has the atomic number {rng.randint(1, 90)}?",
         (("what is its symbol?", "What is the chemical symbol of {q1}?"),
          ("what is the melting point of that element?", "What is the melting point of {q1}?"))),
        (f"Who founded {rng.choice(_COMPANIES)}?",
         (("when was he born?", "When was {q1} born?"),
          ("where was that person born?", "Where was {q1} born?"),
          ("what was the founder's nationality?", "What was the nationality of {q1}?"))),
    )  # fmt: skip
    first, follow_ups = rng.choice(options)
    follow, second = rng.choice(follow_ups)
    return first, follow, second


_PLURAL_FOLLOW_UPS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("what is the difference between them?", "what is the difference?", "how far apart are they?"),
     "What is the difference between {q1} and {q2}?"),
    (("which of them is larger?", "which is bigger?", "which one is greater?"),
     "Which is larger: {q1} or {q2}?"),
    (("what is their sum?", "what do they add up to?", "what is the total?"),
     "What is the sum of {q1} and {q2}?"),
    (("are they equal?", "are the two the same?"), "Are {q1} and {q2} equal?"),
)  # fmt: skip
_PLURAL_PAIRS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the population of {x}?", _CITIES),
    ("What is the atomic number of {x}?", _ELEMENTS),
    ("In which year was {x} born?", _PEOPLE),
    ("How many sides does {x} have?", _SHAPES),
    ("How many legs does {x} have?", _ANIMALS),
)


def _plural_reference(rng: random.Random) -> TrainingPair:
    each, vocab = rng.choice(_PLURAL_PAIRS)
    x, y = rng.sample(vocab, 2)
    asks, canonical = rng.choice(_PLURAL_FOLLOW_UPS)
    ask = rng.choice(asks)
    first, second = each.format(x=x), each.format(x=y)
    both = each.format(x=f"{x} and {y}")  # "What is the population of A and B?"
    query = rng.choice(
        (
            f"{first} {second} {ask[:1].upper()}{ask[1:]}",
            f"{both.rstrip('?')}, and {ask}",
            f"{first.rstrip('?')}, {_lower_first(second).rstrip('?')}, and {ask}",
        )
    )
    steps = [(first, ()), (second, ()), (canonical, ("q1", "q2"))]
    return _pair(_vary(rng, query), steps, "reference")


# (entity type, attribute question, comparative phrasings, final comparison).
_COMPARISONS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("person", "In which year was {x} born?",
     ("Who was born first, {a} or {b}?", "Which of {a} and {b} is older?",
      "Was {a} born before {b}?", "Who is younger: {a} or {b}?"),
     "Which year is earlier: {q1} or {q2}?"),
    ("film", "In which year was {x} released?",
     ("Which came out first, {a} or {b}?", "Was {a} released before {b}?",
      "Which is the older movie, {a} or {b}?"),
     "Which year is earlier: {q1} or {q2}?"),
    ("city", "What is the population of {x}?",
     ("Which city is bigger, {a} or {b}?", "Does {a} have more people than {b}?",
      "Which has the larger population: {a} or {b}?"),
     "Which number is larger: {q1} or {q2}?"),
    ("person", "What was the nationality of {x}?",
     ("Were {a} and {b} of the same nationality?", "Did {a} and {b} come from the same country?"),
     "Are {q1} and {q2} the same?"),
    ("work", "In which year was {x} first published?",
     ("Which was published first, {a} or {b}?", "Is {a} older than {b}?"),
     "Which year is earlier: {q1} or {q2}?"),
    ("company", "In which year was {x} founded?",
     ("Which company is older, {a} or {b}?", "Was {a} founded before {b}?"),
     "Which year is earlier: {q1} or {q2}?"),
)  # fmt: skip


def _comparison(rng: random.Random, src: _Sources) -> TrainingPair:
    kind, attribute, asks, compare = rng.choice(_COMPARISONS)
    a, b = rng.sample(_ENTITIES[kind], 2)
    query = rng.choice(asks).format(a=a, b=b)
    steps: list[tuple[str, Sequence[str]]] = [
        (attribute.format(x=a), ()),
        (attribute.format(x=b), ()),
        (compare, ("q1", "q2")),
    ]
    query, steps = _beside(rng, query, steps, 0.2)
    return _pair(_vary(rng, query), steps, "comparison")


# (item type, how each item's related entity is found, its attribute, (phrasing, comparison))
_BRIDGES: tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...] = (
    ("film", "Who directed {x}?", "In which year was {x} born?",
     (("Which film has the director born later, {a} or {b}?", "Which year is later: {q3} or {q4}?"),
      ("Whose director was born first, {a} or {b}?", "Which year is earlier: {q3} or {q4}?"),
      ("Was the director of {a} born before the director of {b}?",
       "Is {q3} earlier than {q4}?"))),
    ("work", "Who wrote {x}?", "In which country was {x} born?",
     (("Were the authors of {a} and {b} born in the same country?",
       "Are {q3} and {q4} the same country?"),
      ("Do the writers of {a} and {b} come from the same country?",
       "Are {q3} and {q4} the same country?"))),
    ("painting", "Who painted {x}?", "In which year did {x} die?",
     (("Which painting's artist died first, {a} or {b}?", "Which year is earlier: {q3} or {q4}?"),
      ("Did the painter of {a} die before the painter of {b}?", "Is {q3} earlier than {q4}?"))),
    ("company", "Who founded {x}?", "In which year was {x} born?",
     (("Which company's founder is older, {a} or {b}?", "Which year is earlier: {q3} or {q4}?"),
      ("Was the founder of {a} born before the founder of {b}?",
       "Is {q3} earlier than {q4}?"))),
    ("country", "What is the capital of {x}?", "What is the population of {x}?",
     (("Which country has the more populous capital, {a} or {b}?",
       "Which number is larger: {q3} or {q4}?"),
      ("Is the capital of {a} bigger than the capital of {b}?", "Is {q3} larger than {q4}?"))),
)  # fmt: skip


def _bridge(rng: random.Random, src: _Sources) -> TrainingPair:
    kind, find, attribute, asks = rng.choice(_BRIDGES)
    ask, compare = rng.choice(asks)
    a, b = rng.sample(_ENTITIES[kind], 2)
    steps: list[tuple[str, Sequence[str]]] = [
        (find.format(x=a), ()),
        (find.format(x=b), ()),
        (attribute.format(x="{q1}"), ("q1",)),
        (attribute.format(x="{q2}"), ("q2",)),
        (compare, ("q3", "q4")),
    ]
    query, steps = _beside(rng, ask.format(a=a, b=b), steps, 0.15)
    return _pair(_vary(rng, query), steps, "bridge")


def _multihop_comparison(rng: random.Random, src: _Sources) -> TrainingPair | None:
    """A comparison question of HotpotQA's train split, with the plan its phrasing asks for
    (:func:`~langchain_complm.decompose.phrasing.comparison_plan`; questions whose phrasing
    maps to no attribute are skipped)."""
    while (question := src.next_comparison()) is not None:
        if (steps := comparison_plan(question)) is not None:
            return _pair(question, steps, "multihop_comparison")
    return None


_SOURCE_KINDS = (
    "benchmark",
    "recomposed",
    "math_chain",
    "single_source",
    "multihop_comparison",
)
"""Kinds made from the benchmark builder's train split (the others need no data)."""

_MAKERS: dict[str, Callable[[random.Random, _Sources], TrainingPair | None]] = {
    "benchmark": _benchmark,
    "recomposed": _recomposed,
    "math_chain": _math_chain,
    "template_parallel": _template_parallel,
    "template_chain": _template_chain,
    "template_fan_in": _template_fan_in,
    "single_source": _single_source,
    "single_template": _single_template,
    "reference": _reference,
    "reference_lookalike": _reference_lookalike,
    "multihop_chain": _multihop_chain,
    "comparison": _comparison,
    "bridge": _bridge,
    "multihop_comparison": _multihop_comparison,
}


# --- public API -------------------------------------------------------------------------------


def iter_training_pairs(
    seed: int = 0,
    *,
    split_seed: int = SPLIT_SEED,
    data_dir: Any = None,
    mix: dict[str, float] | None = None,
    benchmark_items: int = DEFAULT_BENCHMARK_ITEMS,
    max_chars: int | None = DEFAULT_MAX_CHARS,
) -> Iterator[TrainingPair]:
    """Endless stream of distinct training pairs (stops only if every kind is exhausted).

    Args:
        seed: fixes the draws.
        split_seed: fixes the builder's train split the sources come from (evaluate with it).
        data_dir: benchmark data location, as for ``build_dataset``.
        mix: share of each kind (default :data:`DEFAULT_MIX`); a 0 share leaves a kind out.
        benchmark_items: train items asked of the builder.
        max_chars: skip pairs whose query plus target is longer (None: no limit).
    """
    weights = dict(mix or DEFAULT_MIX)
    unknown = set(weights) - set(_MAKERS)
    if unknown:
        raise ValueError(f"unknown pair kinds: {sorted(unknown)}")
    needs_sources = any(weights.get(k, 0) > 0 for k in _SOURCE_KINDS)
    src = _Sources(seed, split_seed, data_dir, benchmark_items if needs_sources else 0)
    rng = random.Random(f"complm-train:{seed}")
    seen: set[str] = set()
    misses = 0
    while any(w > 0 for w in weights.values()):
        kinds = [k for k, w in weights.items() if w > 0]
        kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        pair = _MAKERS[kind](rng, src)
        if pair is None:  # this kind's source is used up
            weights[kind] = 0.0
            continue
        too_long = max_chars is not None and len(pair.query) + len(pair.target) > max_chars
        if too_long or pair.query in seen:
            misses += 1
            if misses > 10_000:
                return
            continue
        seen.add(pair.query)
        yield pair


def build_training_pairs(n: int, seed: int = 0, **options: Any) -> list[TrainingPair]:
    """The first ``n`` pairs of :func:`iter_training_pairs` (a prefix of any larger ``n``).

    ``options`` are those of :func:`iter_training_pairs` (``data_dir``, ``mix``, ...).

    Raises:
        ValueError: when fewer than ``n`` distinct pairs can be made.
    """
    pairs = []
    for pair in iter_training_pairs(seed, **options):
        pairs.append(pair)
        if len(pairs) == n:
            return pairs
    raise ValueError(f"only {len(pairs)} distinct training pairs could be made, not {n}")


def split_seed_of(metadata: Mapping[str, Any]) -> int:
    """The builder split a trained generator's pairs came from (the seed to evaluate it
    with), from its metadata: runs made before the split had a seed of its own drew from
    their ``seed``'s split."""
    data = metadata.get("data", {})
    return int(data.get("split_seed", data.get("seed", metadata.get("seed", SPLIT_SEED))))


def save_pairs(pairs: Iterable[TrainingPair], path: str | os.PathLike[str]) -> None:
    """Write pairs as JSON Lines."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("w", encoding="utf-8") as f:
        f.writelines(pair.model_dump_json() + "\n" for pair in pairs)


def load_pairs(path: str | os.PathLike[str]) -> list[TrainingPair]:
    """Read pairs written by :func:`save_pairs`."""
    with Path(path).open(encoding="utf-8") as f:
        return [TrainingPair.model_validate_json(line) for line in f if line.strip()]


def pair_statistics(pairs: Sequence[TrainingPair]) -> dict[str, Any]:
    """Counts by kind and by number of sub-queries, shares with edges and singles, lengths."""
    n = len(pairs)
    sizes = Counter(p.n_sub_queries for p in pairs)
    with_edges = sum(p.n_edges > 0 for p in pairs)
    and_singles = sum(
        p.n_sub_queries == 1 and re.search(r"\band\b", p.query) is not None for p in pairs
    )
    return {
        "pairs": n,
        "by_kind": dict(sorted(Counter(p.kind for p in pairs).items())),
        "by_sub_queries": {str(k): sizes[k] for k in sorted(sizes)},
        "with_dependencies": with_edges,
        "singles": sizes.get(1, 0),
        "singles_containing_and": and_singles,
        "mean_query_chars": round(sum(len(p.query) for p in pairs) / n, 1) if n else 0.0,
        "mean_target_chars": round(sum(len(p.target) for p in pairs) / n, 1) if n else 0.0,
        "source_questions": len({s for p in pairs for s in p.source_ids}),
    }


__all__ = [
    "DEFAULT_MIX",
    "SPLIT_SEED",
    "PairKind",
    "TrainingPair",
    "build_training_pairs",
    "chat_messages",
    "iter_training_pairs",
    "load_pairs",
    "pair_statistics",
    "plan_to_target",
    "save_pairs",
    "split_seed_of",
    "target_to_plan",
]
