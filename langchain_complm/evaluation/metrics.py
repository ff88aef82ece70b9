"""Answer and plan metrics for the MultiExpertQA-style benchmarks.

Answers. SQuAD-style normalization, exact match and token F1, plus a correctness rule per
answer type. A part is scored against either its own prediction (e.g. the executor's
answer to that sub-query) or the single final answer text of the whole item:

* choice: against its own prediction, the choice read by :func:`extract_choice` (letter or
  option text) must be the gold letter. In a final answer, the gold option's text must be
  mentioned and no other option of that part; only when none of its options is mentioned
  in words does an explicit letter marker such as ``(B)`` or ``B)`` count, and in a
  multi-part answer only inside the part's own enumerated segment (``(2) ...``, ``2. ...``
  or ``Question 2: ...``), since a letter cannot otherwise be attributed to one part.
* number: against its own prediction, the stated number (after ``answer is``, ``####`` or
  in ``\\boxed{}``, else the last number) must equal the gold number. In a final answer,
  the gold number must be among the numbers of the text (enumerators such as ``(1)`` or
  ``Question 2`` are skipped).
* text: the normalized gold answer must appear, as whole tokens, in the normalized
  prediction, in both cases.

Numbers compare as decimals, so ``1,250``, ``$1250`` and ``1250.00`` all equal ``1250``.
With a final answer text only the item's final parts are scored (a chain's intermediate
result need not be restated).

Plans. A predicted :class:`~langchain_complm.plan.Plan` is compared with a gold one:
sub-query count, a greedy one-to-one matching of sub-queries by token F1 of their questions
(placeholders removed) giving sub-query precision/recall/F1, dependency-edge F1 with
predicted edges mapped through that matching, and routing accuracy of the matched
sub-queries against the gold domains.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict

from langchain_complm.evaluation.multiexpertqa import Item, Part
from langchain_complm.plan import Plan, SubQuery

DEFAULT_MIN_MATCH_F1 = 0.2
"""Least question token F1 for a predicted sub-query to match a gold one."""

# --- normalization --------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalized strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 of the normalized strings (1.0 when both are empty)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, gold: str) -> bool:
    """Whether the normalized gold answer appears, as whole tokens, in the prediction."""
    ref = normalize_answer(gold)
    return bool(ref) and f" {ref} " in f" {normalize_answer(prediction)} "


# --- multiple choice ------------------------------------------------------------------------


def extract_choice(text: str, options: Mapping[str, str]) -> str | None:
    """The option letter a free-form answer chooses, or None when it cannot be told.

    Tried in order: an explicit statement (``answer is B``, ``Answer: (B)``, ``option B``);
    a leading letter (``B``, ``B)``, ``(B) ...``, ``B. ...``); exactly one letter marker
    ``(B)`` / ``B)`` anywhere; exactly one option whose text is mentioned.
    """
    letters = "".join(re.escape(letter) for letter in options)
    if not text.strip() or not letters:
        return None
    explicit = re.search(
        rf"(?i:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*\(?([{letters}])\)?(?![\w'])", text
    )
    if explicit:
        return explicit.group(1)
    leading = re.match(rf"\s*(?:\(([{letters}])\)|([{letters}])(?:[.):]|\s*$))", text)
    if leading:
        return leading.group(1) or leading.group(2)
    markers = _letter_markers(text, letters)
    if len(markers) == 1:
        return markers.pop()
    mentioned = mentioned_options(text, options)
    return mentioned.pop() if len(mentioned) == 1 else None


def mentioned_options(text: str, options: Mapping[str, str]) -> set[str]:
    """Letters of the options whose normalized text appears in the text.

    A mention inside the mention of a longer option does not count, so "doubles" is not
    mentioned by "more than doubles".
    """
    tokens = normalize_answer(text).split()
    spans: list[tuple[int, int, str]] = []
    for letter, option in options.items():
        needle = normalize_answer(option).split()
        if not needle:
            continue
        spans.extend(
            (start, start + len(needle), letter)
            for start in range(len(tokens) - len(needle) + 1)
            if tokens[start : start + len(needle)] == needle
        )
    return {
        letter
        for start, end, letter in spans
        if not any(s <= start and end <= e and e - s > end - start for s, e, _ in spans)
    }


def _letter_markers(text: str, letters: str) -> set[str]:
    """Letters written as ``(B)`` or ``B)``, the usual way to cite an option."""
    return set(re.findall(rf"(?:\(|(?<![\w(]))([{letters}])\)", text))


# --- numbers --------------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_STATED = re.compile(
    r"(?:####|\\boxed\{|(?i:answer)(?:\s+is)?\s*[:=]?)\s*\$?\s*"
    r"(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"
)
# Enumerators of a multi-part answer, e.g. "(1)", "2.", "Question 3:", are not answers.
_ENUMERATOR = re.compile(r"\(\d+\)|^\s*\d+[.)][ \t]+(?=\S)|(?i:question|part)\s+\d+", re.MULTILINE)


def extract_numbers(text: str) -> list[Decimal]:
    """Every number in the text, in order (thousands commas allowed, enumerators skipped)."""
    return [_decimal(m) for m in _NUMBER.findall(_ENUMERATOR.sub(" ", text))]


def extract_answer_number(text: str) -> Decimal | None:
    """The number a free-form answer states: after ``answer is``, ``####`` or in
    ``\\boxed{}`` when present, else the last number; None when there is none."""
    stated = _STATED.findall(text)
    if stated:
        return _decimal(stated[-1])
    numbers = extract_numbers(text)
    return numbers[-1] if numbers else None


def _decimal(number: str) -> Decimal:
    return Decimal(number.replace(",", ""))


def _gold_number(answer: str) -> Decimal | None:
    try:
        return _decimal(answer.strip().lstrip("$"))
    except InvalidOperation:
        return None


# --- answer scoring -------------------------------------------------------------------------


class PartScore(BaseModel):
    """How one gold part was answered."""

    model_config = ConfigDict(frozen=True)

    part_id: str
    correct: bool
    exact_match: float
    f1: float
    extracted: str | None = None
    """The choice letter or number read from the prediction, for choice and number parts."""


class ItemScore(BaseModel):
    """How one item was answered: a score per scored part."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    parts: tuple[PartScore, ...]

    @property
    def all_correct(self) -> bool:
        """Whether every scored part is correct (the item-level accuracy)."""
        return all(part.correct for part in self.parts)

    @property
    def part_accuracy(self) -> float:
        """Share of the scored parts that are correct."""
        return sum(part.correct for part in self.parts) / len(self.parts) if self.parts else 0.0


def score_part(
    part: Part, prediction: str, *, final_answer: bool = False, letters_in: str | None = None
) -> PartScore:
    """Score one part against its own prediction, or (``final_answer=True``) against the
    final answer text of the whole item; the rules are in the module docstring.

    ``letters_in`` is the text where a final answer's option letters may be read for this
    part (default: the whole prediction, as for a one-part item)."""
    extracted: str | None = None
    if part.answer_type == "choice" and part.options and part.answer_letter:
        if final_answer:
            correct = _choice_in_final_answer(
                prediction,
                part.options,
                part.answer_letter,
                prediction if letters_in is None else letters_in,
            )
            extracted = part.answer_letter if correct else None
        else:
            extracted = extract_choice(prediction, part.options)
            correct = extracted == part.answer_letter
    elif part.answer_type == "number" and (gold := _gold_number(part.answer)) is not None:
        if final_answer:
            correct = gold in extract_numbers(prediction)
            extracted = str(gold) if correct else None
        else:
            number = extract_answer_number(prediction)
            extracted = None if number is None else str(number)
            correct = number == gold
    else:
        correct = contains_answer(prediction, part.answer)
    return PartScore(
        part_id=part.id,
        correct=correct,
        exact_match=exact_match(prediction, part.answer),
        f1=token_f1(prediction, part.answer),
        extracted=extracted,
    )


def score_item(item: Item, prediction: str | Mapping[str, str]) -> ItemScore:
    """Score an item from a final answer text (its final parts are scored against it) or
    from per-part predictions keyed by part id (every part is scored; a missing one counts
    as an empty, wrong answer)."""
    if isinstance(prediction, str):
        final = item.final_parts
        # Where each part's option letters may be read: the whole answer of a one-part item,
        # the part's own segment of an enumerated multi-part one, nowhere otherwise.
        scopes = (
            [prediction]
            if len(final) == 1
            else _enumerated_segments(prediction, len(final)) or [""] * len(final)
        )
        parts = tuple(
            score_part(p, prediction, final_answer=True, letters_in=scope)
            for p, scope in zip(final, scopes, strict=True)
        )
    else:
        parts = tuple(score_part(p, prediction.get(p.id, "")) for p in item.parts)
    return ItemScore(item_id=item.id, parts=parts)


def _choice_in_final_answer(
    text: str, options: Mapping[str, str], gold_letter: str, letters_in: str
) -> bool:
    mentioned = mentioned_options(text, options)
    if mentioned:
        return mentioned == {gold_letter}
    # Letters are trusted only when no option is named in words, and only where they can be
    # attributed to this part (``letters_in``).
    letters = "".join(re.escape(letter) for letter in options)
    return gold_letter in _letter_markers(letters_in, letters)


def _enumerated_segments(text: str, n: int) -> list[str] | None:
    """The text after each of the enumerators 1..n, when the answer is enumerated so."""
    marks = list(_ENUMERATOR.finditer(text))
    numbers = [re.search(r"\d+", m.group()).group() for m in marks]  # type: ignore[union-attr]
    if numbers != [str(k) for k in range(1, n + 1)]:
        return None
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return [text[m.end() : end] for m, end in zip(marks, ends, strict=True)]


# --- plan scoring ---------------------------------------------------------------------------


class SubQueryMatch(BaseModel):
    """A predicted sub-query matched to a gold one."""

    model_config = ConfigDict(frozen=True)

    predicted_id: str
    gold_id: str
    f1: float


class PlanScore(BaseModel):
    """A predicted plan against the gold decomposition. Fields are None when the gold
    side does not tell (multihop items only know their hop count, if that)."""

    model_config = ConfigDict(frozen=True)

    n_predicted: int
    n_gold: int | None
    count_error: int | None = None
    """Predicted minus gold number of sub-queries."""
    matches: tuple[SubQueryMatch, ...] | None = None
    sub_query_precision: float | None = None
    sub_query_recall: float | None = None
    sub_query_f1: float | None = None
    edge_precision: float | None = None
    edge_recall: float | None = None
    edge_f1: float | None = None
    routing_accuracy: float | None = None
    """Share of matched sub-queries routed to their gold domain's expert."""

    @property
    def count_match(self) -> bool | None:
        """Whether the plan has the gold number of sub-queries."""
        return None if self.count_error is None else self.count_error == 0


def match_sub_queries(
    predicted: Plan, gold: Plan, *, min_f1: float = DEFAULT_MIN_MATCH_F1
) -> tuple[SubQueryMatch, ...]:
    """Greedy one-to-one matching: the pair with the highest question token F1 first
    (ties in plan order), keeping pairs with F1 of at least ``min_f1``."""
    # Each question is stripped once, not once per pair.
    predicted_texts = [(sq.id, _plain(sq)) for sq in predicted.sub_queries]
    gold_texts = [(sq.id, _plain(sq)) for sq in gold.sub_queries]
    pairs = sorted(
        (-token_f1(p_text, g_text), gi, pi, p_id, g_id)
        for pi, (p_id, p_text) in enumerate(predicted_texts)
        for gi, (g_id, g_text) in enumerate(gold_texts)
    )
    used_pred: set[str] = set()
    used_gold: set[str] = set()
    matches = []
    for neg_f1, _, _, pred_id, gold_id in pairs:
        if -neg_f1 < min_f1 or -neg_f1 == 0 or pred_id in used_pred or gold_id in used_gold:
            continue
        used_pred.add(pred_id)
        used_gold.add(gold_id)
        matches.append(SubQueryMatch(predicted_id=pred_id, gold_id=gold_id, f1=-neg_f1))
    return tuple(matches)


def score_plan(
    predicted: Plan,
    gold: Plan,
    *,
    gold_domains: Mapping[str, str] | None = None,
    domain_experts: Mapping[str, str] | None = None,
    min_f1: float = DEFAULT_MIN_MATCH_F1,
) -> PlanScore:
    """Compare a predicted plan with the gold plan.

    Args:
        predicted: the generator's plan, routed when routing accuracy is wanted.
        gold: the gold plan.
        gold_domains: gold sub-query id -> domain.
        domain_experts: domain -> name of the expert that should answer it. Routing accuracy
            is computed when both mappings are given.
        min_f1: least question token F1 for a match.
    """
    matches = match_sub_queries(predicted, gold, min_f1=min_f1)
    sq_p, sq_r, sq_f1 = _prf(len(matches), len(predicted.sub_queries), len(gold.sub_queries))
    to_gold = {m.predicted_id: m.gold_id for m in matches}
    pred_edges = _edges(predicted)
    # An edge with an unmatched end maps to no gold edge, so it only costs precision.
    mapped = {(to_gold[a], to_gold[b]) for a, b in pred_edges if a in to_gold and b in to_gold}
    gold_edges = _edges(gold)
    e_p, e_r, e_f1 = _prf(len(mapped & gold_edges), len(pred_edges), len(gold_edges))
    routing = None
    if gold_domains is not None and domain_experts is not None:
        routing = routing_accuracy(predicted, matches, gold_domains, domain_experts)
    return PlanScore(
        n_predicted=len(predicted.sub_queries),
        n_gold=len(gold.sub_queries),
        count_error=len(predicted.sub_queries) - len(gold.sub_queries),
        matches=matches,
        sub_query_precision=sq_p,
        sub_query_recall=sq_r,
        sub_query_f1=sq_f1,
        edge_precision=e_p,
        edge_recall=e_r,
        edge_f1=e_f1,
        routing_accuracy=routing,
    )


def score_item_plan(
    item: Item,
    predicted: Plan,
    *,
    domain_experts: Mapping[str, str] | None = None,
    min_f1: float = DEFAULT_MIN_MATCH_F1,
) -> PlanScore:
    """Score a predicted plan for an item. Without a gold plan (multihop items) only the
    sub-query count is compared, with the source's hop count, and only when it is known."""
    if item.gold_plan is None:
        n = len(predicted.sub_queries)
        return PlanScore(
            n_predicted=n,
            n_gold=item.hops,
            count_error=None if item.hops is None else n - item.hops,
        )
    return score_plan(
        predicted,
        item.gold_plan,
        gold_domains={part.id: part.domain for part in item.parts},
        domain_experts=domain_experts,
        min_f1=min_f1,
    )


def routing_accuracy(
    predicted: Plan,
    matches: Sequence[SubQueryMatch],
    gold_domains: Mapping[str, str],
    domain_experts: Mapping[str, str],
) -> float | None:
    """Share of matched sub-queries routed to the route of their gold domain (an unrouted
    sub-query counts as wrong). A route is an expert, or in two-step routing a category
    (:attr:`~langchain_complm.plan.RoutingDecision.routed_to`). Only sub-queries whose gold
    domain has a route in ``domain_experts`` are judged; None when there is none. Score the
    gold plan routed by the router to measure the router alone."""
    expected = {
        m.predicted_id: domain_experts[gold_domains[m.gold_id]]
        for m in matches
        if gold_domains.get(m.gold_id) in domain_experts
    }
    if not expected:
        return None
    routes = {sq.id: sq.route.routed_to if sq.route else None for sq in predicted.sub_queries}
    hits = sum(routes[sq_id] == route for sq_id, route in expected.items())
    return hits / len(expected)


def _plain(sub_query: SubQuery) -> str:
    """The question without its placeholders, whose ids differ between plans (the plan's
    own rule of what a placeholder is: braces naming a dependency)."""
    return sub_query.render(dict.fromkeys(sub_query.placeholders, ""))


def _edges(plan: Plan) -> set[tuple[str, str]]:
    return {(dep, sq.id) for sq in plan.sub_queries for dep in sq.depends_on}


def _prf(hits: int, n_predicted: int, n_gold: int) -> tuple[float, float, float]:
    """Precision, recall, F1. An empty side makes its ratio 1 (nothing wrong, nothing
    missed), so two empty sides score 1 and one empty side scores an F1 of 0."""
    precision = hits / n_predicted if n_predicted else 1.0
    recall = hits / n_gold if n_gold else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
