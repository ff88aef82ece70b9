"""Model backends: local transformers chat models behind a micro-batching generation engine,
LoRA experts sharing one base model and its batches, a memory-budgeted model pool, the offline
embedded default models, and served models (:class:`ChatRemote`: an OpenAI-compatible engine or
any LangChain provider).

Only the config/build layer imports these; the stages work with any LangChain chat model and
embeddings. Importing this package loads neither torch nor transformers.
"""

from langchain_complm.models.huggingface import ChatLocalHuggingFace, GenerationEngine
from langchain_complm.models.lora import LoraEngine
from langchain_complm.models.pool import ChatPooledHuggingFace, ModelPool
from langchain_complm.models.remote import ChatRemote

__all__ = [
    "ChatLocalHuggingFace",
    "ChatPooledHuggingFace",
    "ChatRemote",
    "GenerationEngine",
    "LoraEngine",
    "ModelPool",
]
