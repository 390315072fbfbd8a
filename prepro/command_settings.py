"""The options of each command that no library settings class holds, declared as settings like
every other option (one `setting` field each: kind, range, help), so that ``cli.py`` derives them
all the same way (`prepro.click_options`) and writes no option by hand.

`SharedOptions` are the options several commands take; each command says in its own words what
they do for it. Helps here are written as ``--help`` shows them. Imported at start-up: nothing
heavy, and the formats of the heavy exporters are named here so that they are defined once.
"""

from __future__ import annotations

from dataclasses import dataclass

from prepro.settings import setting

EXPORT_FORMATS = ("png", "npz", "hdf5")  # `prepro.export`
MODEL_FORMATS = ("onnx", "torchscript")  # `inference.export_model`
_SHIPPED_OR_OWN = "[default: as the model's card says: on for the shipped fer2013 model, off for your own runs]."


@dataclass(frozen=True)
class SharedOptions:
    quiet: bool = setting(False, "no progress bar", "bool", cli=("-q", "--quiet"))
    overwrite: bool = setting(False, "replace what an earlier run wrote", "bool")
    as_json: bool = setting(False, "print JSON", "bool", cli="--json")
    strict: bool = setting(False, "exit non-zero when any input could not be used", "bool")
    device: str = setting("auto", "auto, cpu, cuda, cuda:1, ...", "str")


@dataclass(frozen=True)
class PreprocessCommand:
    retry_failed: bool = setting(False, "Try the inputs listed as failures again.", "bool")


@dataclass(frozen=True)
class InspectCommand:
    n_fail: int = setting(20, "How many failures to list in the text output (all in --json).", "int", low=0,
                          cli="--failures")


@dataclass(frozen=True)
class ExportCommand:
    fmt: str = setting("png", "png: class folders OUT/<region>/<split>/<label>/<id>.png + manifest.csv; npz: "
                       "OUT/<split>.npz; hdf5: one shard-format file OUT/blocks.h5.", "str", choices=EXPORT_FORMATS,
                       cli="--format")
    regions: str = setting("eyes,mouth", "What to export, from eyes,mouth,face,landmarks (landmarks: "
                           "OUT/landmarks.npz with png, arrays in each .npz; hdf5 always holds everything).", "str",
                           metavar="LIST")
    splits: list[str] | None = setting(None, "Splits to export (repeatable or a comma list; default all).",
                                       "str_list", optional=True, cli="--split", metavar="NAME[,NAME]",
                                       repeatable=True)
    labels: list[str] | None = setting(None, "Canonical labels to export, or unlabelled (repeatable or a comma "
                                       "list; default all).", "str_list", optional=True, cli="--label",
                                       metavar="NAME[,NAME]", repeatable=True)
    box_methods: list[str] | None = setting(None, "Keep samples whose face box was found this way: hog, cnn, "
                                            "estimated, estimated_fallback, given (repeatable; default all).",
                                            "str_list", optional=True, cli="--box-method", metavar="NAME[,NAME]",
                                            repeatable=True)
    min_quality: float | None = setting(None, "Keep samples whose landmark quality is at least this.", "float",
                                        low=0, high=1, optional=True)


@dataclass(frozen=True)
class PreviewCommand:
    out_png: str | None = setting(None, "The image to write (.png, .jpg, .webp, .bmp; default: SHARDS_DIR/preview.png, "
                                  "or preview.png for raw images; -SPLIT, -LABELS and -worst are added to the default "
                                  "name for those requests, and a default name never replaces a file faceblocks did "
                                  "not write).", "str", optional=True, cli="--out", path="file")
    split: str | None = setting(None, "Shards only: only this split (train, val, test).", "str", optional=True)
    labels: list[str] | None = setting(None, "Shards only: only these labels (repeatable or a comma list).",
                                       "str_list", optional=True, cli="--label", metavar="NAME[,NAME]",
                                       repeatable=True)
    count: int = setting(24, "Samples on the sheet (5 per row).", "int", low=1, high=400)
    seed: int = setting(0, "Seed of the random choice.", "int", low=0)
    worst: int | None = setting(None, "Show the N lowest-quality samples instead (to find landmark failures).",
                                "int", low=1, high=400, optional=True, metavar="N")


@dataclass(frozen=True)
class TrainCommand:
    resume: bool = setting(False, "Continue the stopped run in RUN_DIR with its stored settings (only run-control "
                           "options such as --epochs or --device may be given).", "bool")


@dataclass(frozen=True)
class EvaluateCommand:
    split: str = setting("test", "train, val or test; several scored together (val,test); or all, every split: for a "
                         "dataset the model never trained on (CK+, JAFFE), whose own split is no test set for it.",
                         "str", metavar="NAME[,NAME]|all")
    tta_flip: bool | None = setting(None, "Average the predictions of each face and its mirror image "
                                    + _SHIPPED_OR_OWN, "bool", optional=True, cli="--tta-flip/--no-tta-flip")
    tta_shift: bool | None = setting(None, "Also average over the blocks moved by one pixel in each of the 8 "
                                     "directions (18 views with the flip) " + _SHIPPED_OR_OWN, "bool",
                                     optional=True, cli="--tta-shift/--no-tta-shift")
    out_dir: str | None = setting(None, "Where metrics.json and the confusion matrix go [default: the run folder; "
                                  "for a shipped model, SHARDS_DIR-eval-MODEL-SPLIT beside SHARDS_DIR].", "str",
                                  optional=True, cli="--out", path="folder")
    allow_mismatch: bool = setting(False, "Evaluate even if the shards' blocks were cut with other margins, rotation "
                                   "or padding.", "bool")


@dataclass(frozen=True)
class RunCommand:
    template: bool = setting(False, "Print a commented config with every key and its default.", "bool")


@dataclass(frozen=True)
class DemoCommand:
    per_class: int = setting(60, "Synthetic images per expression.", "int", low=4, high=10_000)


@dataclass(frozen=True)
class ExportModelCommand:
    fmt: str = setting("onnx", "onnx: for onnxruntime and other ONNX runtimes (needs faceblocks[onnx]); torchscript: "
                       "for torch.jit.load, in Python or C++ (libtorch).", "str", choices=MODEL_FORMATS,
                       cli="--format")
    # Its range depends on the exporter: `inference.export_model` checks it, once.
    opset: int | None = setting(None, "ONNX opset (default 17). ONNX only.", "int", optional=True)
    no_check: bool = setting(False, "Skip the check of the written file (onnx.checker, onnxruntime or "
                             "torch.jit.load against the torch model).", "bool")
