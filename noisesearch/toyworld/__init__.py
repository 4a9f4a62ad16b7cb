"""The embedded default world: procedural shape scenes, a tiny text-to-image model trained on
them, verifiers for them, and a ground-truth evaluator that parses pixels."""
