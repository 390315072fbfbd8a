"""The names of the registered networks, importable without torch (for option choices and checks).

`architectures.registry` checks at import that exactly these names are registered.
"""

MODEL_NAMES = ("two-branch", "two-branch-face", "two-branch-concat", "face-cnn")
