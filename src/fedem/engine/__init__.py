"""The batched federation: rounds, evaluation, result files."""
