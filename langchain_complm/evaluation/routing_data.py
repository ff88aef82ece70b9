"""Labelled routing data built from the benchmark sources: each source question becomes a
sub-query labelled with the route of its domain, which its source tells (GSM8K is math,
MedQA medicine, an MMLU subject its domain, the multi-hop sets general knowledge).

The questions come from the same per-source train/dev/test pools as the MultiExpertQA-style
datasets (:mod:`~langchain_complm.evaluation.multiexpertqa`, same seed), so routing data of
the train split shares no source question with a dev or test benchmark item: fit on
``train``, calibrate thresholds on ``dev``, evaluate on ``test``. The text of a labelled
query is exactly the sub-query of the gold plan (the question with its options listed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from langchain_complm.evaluation.multiexpertqa import (
    DEFAULT_MAX_PART_CHARS,
    Split,
    _split_pools,
    part_from_record,
)
from langchain_complm.evaluation.sources import HUB, DataLocation, resolve_data_dir
from langchain_complm.route.calibration import LabelledQuery

DOMAIN_ALIASES: dict[str, tuple[str, ...]] = {
    "math": ("math", "mathematics"),
    "medicine": ("medicine", "medical", "health"),
    "law": ("law", "legal"),
    "computer_science": ("computer_science", "cs", "programming", "computing"),
    "physics": ("physics", "science"),
    "history": ("history",),
    "general": ("general",),
}
"""Route (expert or category) names that serve each benchmark domain, in order of
preference (the default expert set has ``science`` for physics)."""


def domain_expert_map(expert_names: Iterable[str]) -> dict[str, str]:
    """Benchmark domain -> the route that should get it: one named like the domain or one
    of its :data:`DOMAIN_ALIASES`, else ``general`` when there is one. Domains without a
    suitable route are left out (routing accuracy then ignores them)."""
    names = list(expert_names)
    mapping = {}
    for domain, aliases in DOMAIN_ALIASES.items():
        match = next((a for a in aliases if a in names), None)
        if match is None and "general" in names:
            match = "general"
        if match is not None:
            mapping[domain] = match
    return mapping


def build_routing_data(
    split: Split,
    routes: Mapping[str, str],
    *,
    per_domain: int | None = None,
    seed: int = 0,
    data_dir: DataLocation = None,
    max_part_chars: int | None = DEFAULT_MAX_PART_CHARS,
) -> list[LabelledQuery]:
    """Labelled sub-queries of one split, deterministically.

    Args:
        split: ``train`` to fit, ``dev`` to calibrate, ``test`` to evaluate.
        routes: benchmark domain -> route label (e.g. :func:`domain_expert_map` of the
            expert names); domains not in it are left out.
        per_domain: at most this many queries per domain (a prefix of the domain's pool,
            which interleaves its sources, so every source is represented).
        seed, data_dir, max_part_chars: as for
            :func:`~langchain_complm.evaluation.multiexpertqa.build_dataset`; the same seed
            gives the same split of every source.

    Raises:
        ValueError: ``routes`` names no domain of the sources.
    """
    location = data_dir if data_dir == HUB else str(resolve_data_dir(data_dir).resolve())
    pools = _split_pools(split, seed, location, max_part_chars)
    if not set(routes) & set(pools):
        raise ValueError(
            f"routes map no benchmark domain (domains: {', '.join(pools)}; got "
            f"{', '.join(routes) or 'none'})"
        )
    items = []
    for domain, records in pools.items():
        if domain not in routes:
            continue
        for record in records[:per_domain]:
            items.append(
                LabelledQuery(
                    text=part_from_record("q1", record).prompt,
                    label=routes[domain],
                    source=record.source,
                    source_id=record.id,
                )
            )
    return items


__all__ = ["DOMAIN_ALIASES", "build_routing_data", "domain_expert_map"]
