from __future__ import annotations

import pytest
from fakes import KeywordEmbeddings


@pytest.fixture
def embeddings() -> KeywordEmbeddings:
    return KeywordEmbeddings()
