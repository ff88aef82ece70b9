"""Stage 2, the embedding router: each sub-query goes to the expert whose profile is nearest."""

from langchain_complm.route.router import EmbeddingRouter

__all__ = ["EmbeddingRouter"]
