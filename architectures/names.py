"""The names of the registered networks, importable without torch (for option choices and checks).

`architectures.registry.register_model` refuses a name not listed here.
"""

MODEL_NAMES = ("two-branch", "two-branch-face", "two-branch-concat", "face-cnn", "ensemble")
