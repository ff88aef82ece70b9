"""Benchmarks: public QA sources and the MultiExpertQA-style compound benchmarks."""
