"""The public API, pinned: adding or removing a name is a deliberate change made here."""

from __future__ import annotations

import importlib

import langchain_complm

EXPECTED_ALL = {
    "langchain_complm": [
        "ChatCompLLM",
        "CompLLMConfig",
        "CompLLMError",
        "CompLLMOutput",
        "Expert",
        "ExpertProfile",
        "FailurePolicy",
        "Plan",
        "PlanValidationError",
        "ProgressEvent",
        "RoutingDecision",
        "SubQuery",
        "SubQueryResult",
        "build_comp_llm",
        "create_comp_llm",
        "load_config",
    ],
    "langchain_complm.decompose": [
        "ConversationPolicy",
        "DecompositionInput",
        "PlanStreamParser",
        "ShapeRouter",
        "StructuralSubQueryGenerator",
        "SubQueryGenerator",
        "parse_plan",
        "plan_json_schema",
        "repair_plan",
    ],
    "langchain_complm.route": [
        "BaseRouter",
        "BudgetPolicy",
        "Category",
        "CentroidStrategy",
        "EmbeddingRouter",
        "KNNStrategy",
        "LabelledQuery",
        "LeastLoadedPolicy",
        "LinearHeadStrategy",
        "RoutingEvaluation",
        "RoutingStrategy",
        "SelectionPolicy",
        "TwoStepRouter",
        "calibrate_thresholds",
        "read_labelled",
        "write_labelled",
    ],
    "langchain_complm.execute": [
        "DROPPED",
        "Attempt",
        "ExecutionResult",
        "FailurePolicy",
        "GrowingPlanRun",
        "QueryExecutor",
        "ScheduleMode",
        "SubQueryExecutionError",
        "SubQueryResult",
    ],
    "langchain_complm.models": [
        "ChatLocalHuggingFace",
        "ChatPooledHuggingFace",
        "ChatRemote",
        "GenerationEngine",
        "LoraEngine",
        "ModelPool",
    ],
    "langchain_complm.errors": [
        "AggregationError",
        "CompLLMError",
        "ConfigError",
        "MemoryBudgetError",
        "ModelNotFoundError",
        "ModelNotServedError",
        "PlanReviewError",
        "PlanValidationError",
        "RemoteModelError",
        "ServerHTTPError",
        "ServerTimeoutError",
        "ServerUnreachableError",
        "SubQueryExecutionError",
        "UsageError",
    ],
}


def test_all_imports() -> None:
    for module_name, expected in EXPECTED_ALL.items():
        module = importlib.import_module(module_name)
        assert sorted(module.__all__) == sorted(expected), module_name
        for name in expected:
            assert getattr(module, name) is not None, f"{module_name}.{name}"


def test_top_level_fits_on_a_screen() -> None:
    assert len(langchain_complm.__all__) <= 20


def test_every_error_shares_one_base() -> None:
    from langchain_complm import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.CompLLMError), name
