"""MultiExpertQA-style accuracy benchmarks: the systems compared (Comp-LLM and the paper's
baselines) and the runner that scores them. Datasets and metrics live in
:mod:`langchain_complm.evaluation`."""
