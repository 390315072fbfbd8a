"""Export a trained checkpoint as a self-contained model other projects can run: ONNX or TorchScript.

The exported graph takes one input per region of the model (``eyes``, ``mouth`` and ``face`` when
the model uses it, in the model's ``regions`` order): float32 tensors (N, 1, H, W) holding raw grey
values 0..255 at the checkpoint's block sizes. The normalisation of training (x / 255, then
(x - mean) / std) happens inside the graph, so a user feeds block pixels as they are. Outputs are
``logits`` (N, classes), ``probabilities`` (their softmax) and ``region_weights`` (N, regions).

The file describes itself: class names, regions, block sizes, the block preprocessing recorded in
the checkpoint, the architecture, the faceblocks version and a short usage note. ONNX keeps them in
``metadata_props`` (every value a JSON string); TorchScript in an extra file ``faceblocks.json``.

ONNX export uses torch's TorchScript-based (tracing) exporter when torch still ships it: it needs
nothing beyond the ``onnx`` package, takes well under a second and has long covered every operator
these networks use. torch >= 2.9 defaults to the ``torch.export``-based ("dynamo") exporter, which
needs ``onnxscript``; it is used when the tracing exporter is gone, or when asked for.

After writing, the file is checked when the checker is installed: ``onnx.checker`` and, with
onnxruntime, one random batch against the torch model; TorchScript is reloaded with
``torch.jit.load`` and compared the same way. A file that fails its check is removed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from prepro import __version__
from prepro.blocks import cutting_geometry
from prepro.command_settings import MODEL_FORMATS
from prepro.cut_settings import BlockConfig
from prepro.errors import DataError, InputError, OutputError
from prepro.outputs import atomic_write, checked_output_file
from training.checkpoint import build_model_from_checkpoint
from training.errors import CheckpointError
from training.model_names import resolve_checkpoint
from training.tta import model_tta

FORMATS = MODEL_FORMATS
ONNX_EXPORTERS = ("auto", "trace", "dynamo")
# 17 is the newest opset that the runtimes people deploy to (onnxruntime >= 1.13, TensorRT 8.6,
# OpenVINO, onnxruntime-web) all accept, and it covers every operator these networks use. The
# dynamo exporter builds opset 18 natively; lower targets would go through onnx's version converter.
DEFAULT_OPSET = {"trace": 17, "dynamo": 18}
OPSET_RANGE = {"trace": (13, 20), "dynamo": (18, 23)}
OUTPUT_NAMES = ("logits", "probabilities", "region_weights")
METADATA_FILE = "faceblocks.json"  # the TorchScript extra file holding the metadata
METADATA_FORMAT = "faceblocks-model"
PIXEL_SCALE = 1.0 / 255.0  # training/data.py: uint8 blocks are divided by 255 before normalising
CHECK_TOLERANCE = 1e-4  # largest absolute difference from the torch model the check accepts
CHECK_BATCH = 3  # differs from the traced batch (2), so the check also exercises the dynamic batch
INSTALL_HINT = "pip install 'faceblocks[onnx]'"


class ExportCheckError(DataError):
    """The written file fails its check (onnx.checker, or outputs that differ from the torch model)."""


@dataclass
class ExportedModel:
    """What `export_model` wrote and how it was checked."""

    path: Path
    fmt: str  # "onnx" or "torchscript"
    exporter: str  # "trace", "dynamo" (ONNX) or "torch.jit.trace" (TorchScript)
    opset: int | None  # ONNX opset; None for TorchScript
    inputs: dict[str, tuple[str | int, ...]]  # region -> ("N", 1, H, W)
    outputs: dict[str, tuple[str | int, ...]]  # output name -> ("N", classes) or ("N", regions)
    class_names: list[str]
    regions: list[str]
    size_bytes: int
    check: str  # one line: what was checked, or why not
    max_abs_diff: float | None = None  # largest output difference from the torch model, when compared
    metadata: dict[str, Any] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        """What was written, for people: path, kind and size, inputs, outputs, classes, check."""
        kind = "TorchScript"
        if self.fmt == "onnx":
            kind = f"ONNX opset {self.opset}, torch.onnx {self.exporter} exporter"
        return [f"wrote {self.path} ({kind}, {_human_size(self.size_bytes)})",
                "  inputs:  " + ", ".join(f"{n} {_dims(d)}" for n, d in self.inputs.items())
                + ", float32 grey values 0..255",
                "  outputs: " + ", ".join(f"{n} {_dims(d)}" for n, d in self.outputs.items()),
                f"  classes: {', '.join(self.class_names)}",
                f"  check:   {self.check}"]


def _dims(shape: Sequence[str | int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _human_size(n_bytes: int) -> str:
    if n_bytes < 1024:
        return f"{n_bytes} bytes"
    if n_bytes < 1024 ** 2:
        return f"{n_bytes / 1024:.1f} KiB"
    return f"{n_bytes / 1024 ** 2:.1f} MiB"


def export_model(checkpoint: str | os.PathLike, out_path: str | os.PathLike, fmt: str = "onnx",
                 opset: int | None = None, *, overwrite: bool = False, check: bool = True,
                 onnx_exporter: str = "auto") -> ExportedModel:
    """Write the model of ``checkpoint`` (a run folder, meaning its best.pt, or a .pt file) to ``out_path``.

    ``fmt`` is "onnx" or "torchscript"; ``opset`` the ONNX opset (default: 17 with the tracing
    exporter, 18 with dynamo); ``onnx_exporter`` "auto" (tracing when torch has it), "trace" or
    "dynamo". The file is written atomically; an existing one is refused unless ``overwrite``.
    With ``check``, the written file is verified as far as the installed packages allow and
    removed if it fails. Raises `FaceblocksError` subclasses for problems a user can fix.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        exporter = _choose_onnx_exporter(onnx_exporter)
        opset = _checked_opset(opset, exporter)
    elif opset is not None:
        raise InputError("--opset applies to ONNX only; leave it out for --format torchscript")
    else:
        exporter = "torch.jit.trace"
    out = checked_output_file(out_path, overwrite, example="model.onnx")
    ckpt, model = _load_model(checkpoint)
    regions = [str(r) for r in model.regions]
    shapes, normalization = _block_shapes(ckpt, regions), _normalization(ckpt)
    metadata = export_metadata(ckpt, regions, shapes)
    # TorchScript has no output names, so its graph returns a dict; ONNX names a tuple's outputs.
    module = block_input_model(model, regions, normalization, named_outputs=fmt == "torchscript")
    example = _random_blocks(shapes, 2, seed=0)
    if fmt == "onnx":
        data = _onnx_bytes(module, example, exporter, opset, metadata)
        _write_atomically(out, lambda f: f.write(data))
    else:
        _write_torchscript(out, module, example, metadata)
    summary, diff = "not checked (check turned off)", None
    if check:
        verify = _check_onnx if fmt == "onnx" else _check_torchscript
        try:
            summary, diff = verify(out, _reference_outputs(model, regions, normalization), shapes, metadata)
        except ExportCheckError:
            out.unlink(missing_ok=True)  # a file that does not match its model must not be used
            raise
    n, c, r = "N", len(ckpt["class_names"]), len(regions)
    return ExportedModel(
        path=out, fmt=fmt, exporter=exporter, opset=opset,
        inputs={reg: (n, 1, *shapes[reg]) for reg in regions},
        outputs={"logits": (n, c), "probabilities": (n, c), "region_weights": (n, r)},
        class_names=list(ckpt["class_names"]), regions=regions, size_bytes=out.stat().st_size,
        check=summary, max_abs_diff=diff, metadata=metadata)


# ----------------------------------------------------------------------------------------------
# Checkpoint, options, metadata


def _load_model(checkpoint: str | os.PathLike) -> tuple[dict[str, Any], nn.Module]:
    """The checkpoint (loaded with weights_only=True) and its model in eval mode, on the CPU."""
    _path, ckpt = resolve_checkpoint(checkpoint)
    try:
        model = build_model_from_checkpoint(ckpt)
    except (ValueError, TypeError) as e:
        # create_model refuses an unregistered architecture or arguments its constructor lacks.
        raise CheckpointError(f"{checkpoint}: cannot build its {ckpt.get('arch')!r} model ({e}): the "
                                    "checkpoint is from an incompatible faceblocks version") from None
    if list(model.regions) != list(ckpt["regions"]):
        raise CheckpointError(f"{checkpoint}: its regions {ckpt['regions']} differ from its model's "
                                    f"{list(model.regions)}: the checkpoint is damaged")
    return ckpt, model.cpu().eval()


def _block_shapes(ckpt: dict[str, Any], regions: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(height, width) of each region's block, as recorded in the checkpoint."""
    sizes = ckpt["block_sizes"]
    missing = [r for r in regions if r not in sizes]
    if missing:
        raise CheckpointError(f"the checkpoint records no block size for {', '.join(missing)}: it is "
                                    "damaged or from an incompatible faceblocks version")
    try:
        shapes = {r: (int(sizes[r][0]), int(sizes[r][1])) for r in regions}
    except (TypeError, ValueError, IndexError):
        raise CheckpointError("the checkpoint's block sizes are not HEIGHT, WIDTH pairs: it is "
                                    "damaged") from None
    if any(h < 1 or w < 1 for h, w in shapes.values()):
        raise CheckpointError(f"the checkpoint's block sizes {shapes} are not positive: it is damaged")
    return shapes


def _normalization(ckpt: dict[str, Any]) -> tuple[float, float]:
    """(mean, std) applied after scaling to 0..1, as recorded in the checkpoint."""
    norm = ckpt.get("normalization") or {}
    try:
        mean, std = float(norm["mean"]), float(norm["std"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError("the checkpoint's normalisation is not {mean, std}: it is "
                                    "damaged") from None
    if not std > 0:
        raise CheckpointError(f"the checkpoint's normalisation std is {std}: it is damaged")
    return mean, std


def _choose_onnx_exporter(requested: str) -> str:
    if requested not in ONNX_EXPORTERS:
        raise InputError(f"unknown ONNX exporter {requested!r}; choose one of "
                                f"{', '.join(ONNX_EXPORTERS)}")
    if requested == "auto":
        return "trace" if _tracing_onnx_exporter_available() else "dynamo"
    if requested == "trace" and not _tracing_onnx_exporter_available():
        raise InputError(f"torch {torch.__version__} no longer ships the tracing ONNX exporter: use "
                                "the dynamo exporter")
    return requested


def _tracing_onnx_exporter_available() -> bool:
    """Whether this torch still has the TorchScript-based ONNX exporter (every torch 2.x so far)."""
    params = inspect.signature(torch.onnx.export).parameters
    if "dynamo" not in params or params["dynamo"].default is False:
        return True  # torch < 2.9: the tracing exporter is the default
    return importlib.util.find_spec("torch.onnx._internal.torchscript_exporter") is not None


def _checked_opset(opset: int | None, exporter: str) -> int:
    if opset is None:
        return DEFAULT_OPSET[exporter]
    low, high = OPSET_RANGE[exporter]
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise InputError(f"opset {opset!r} is not supported by the {exporter} ONNX exporter: use "
                                f"{low} to {high} (default {DEFAULT_OPSET[exporter]})")
    return opset


def usage_text(regions: Sequence[str], shapes: dict[str, tuple[int, int]]) -> str:
    """How to feed the exported model, in a few sentences."""
    feeds = ", ".join(f"{r} (N, 1, {shapes[r][0]}, {shapes[r][1]})" for r in regions)
    return (f"Inputs, one per region: {feeds}; float32 grey pixel values 0..255, not normalised (the "
            "graph divides by 255 and normalises). Cut the blocks from 68 landmarks as 'geometry' says (the "
            "settings in 'preprocessing'). Outputs: logits (N, classes) and probabilities (N, classes) in "
            "'class_names' order, region_weights (N, regions) in 'regions' order. With 'tta_flip', faceblocks "
            "averages the probabilities with those of the blocks mirrored left-right; with 'tta_shift', also "
            "over the blocks moved by one pixel in each of the 8 directions (border pixels repeated).")


def export_metadata(ckpt: dict[str, Any], regions: Sequence[str],
                    shapes: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """The JSON-able description written into the exported file."""
    flip, shift = model_tta(ckpt)
    mean, std = _normalization(ckpt)
    n_classes, n_regions = len(ckpt["class_names"]), len(regions)
    return {
        "format": METADATA_FORMAT,
        "faceblocks_version": __version__,
        "trained_with_faceblocks_version": ckpt.get("faceblocks_version"),
        "arch": ckpt["arch"],
        "class_names": list(ckpt["class_names"]),
        "regions": list(regions),
        "block_sizes": {r: list(shapes[r]) for r in regions},
        "inputs": {r: ["N", 1, *shapes[r]] for r in regions},
        "input_dtype": "float32",
        "input_range": [0, 255],
        "outputs": {"logits": ["N", n_classes], "probabilities": ["N", n_classes],
                    "region_weights": ["N", n_regions]},
        "normalization": {"scale": PIXEL_SCALE, "mean": mean, "std": std, "in_graph": True},
        # Round-tripped through JSON so that the metadata holds exactly what a reader gets back.
        "preprocessing": json.loads(json.dumps(ckpt.get("preprocessing") or {}, default=str)),
        "geometry": _geometry(ckpt),
        # The model's card may average each face's probabilities over views of its blocks
        # (`faceblocks predict` does, by default): mirrored left-right, and moved by one pixel.
        "tta_flip": flip,
        "tta_shift": shift,
        "epoch": ckpt.get("epoch"),
        "usage": usage_text(regions, shapes),
    }


def _geometry(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """How the model's blocks are cut from 68 landmarks (`prepro.blocks.cutting_geometry`); None for
    a checkpoint that records no block preprocessing."""
    blocks = (ckpt.get("preprocessing") or {}).get("blocks")
    return cutting_geometry(BlockConfig.from_dict(blocks)) if blocks else None


def read_export_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a file written by `export_model` (ONNX by its suffix or content, else TorchScript)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx" or not _is_zip(path):
        onnx = _import_onnx()
        proto = onnx.load(str(path), load_external_data=False)
        return {p.key: json.loads(p.value) for p in proto.metadata_props}
    extra = {METADATA_FILE: ""}
    with _quiet_export():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[METADATA_FILE])


def _is_zip(path: Path) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


# ----------------------------------------------------------------------------------------------
# The exported module


class BlockInputModel(nn.Module):
    """A faceblocks model taking raw 0..255 blocks as separate tensors, normalising inside the graph.

    ``forward(*blocks)`` takes one (N, 1, H, W) tensor per region, in ``regions`` order, and
    returns (logits, probabilities, region_weights), or a dict of them with ``named_outputs``
    (TorchScript has no output names otherwise). Build it with `block_input_model`, whose
    ``forward`` names its parameters after the regions.
    """

    def __init__(self, model: nn.Module, regions: Sequence[str], normalization: tuple[float, float],
                 named_outputs: bool = False):
        super().__init__()
        self.model = model
        self.regions = tuple(regions)
        self.mean, self.std = normalization
        self.named_outputs = named_outputs

    def run(self, blocks: Sequence[torch.Tensor]):
        batch = {r: (b * PIXEL_SCALE - self.mean) / self.std for r, b in zip(self.regions, blocks)}
        out = self.model(batch)
        probabilities = out.logits.softmax(dim=1)
        if self.named_outputs:
            return {"logits": out.logits, "probabilities": probabilities,
                    "region_weights": out.region_weights}
        return out.logits, probabilities, out.region_weights

    def forward(self, *blocks: torch.Tensor):
        return self.run(blocks)


_NAMED_INPUT_CLASSES: dict[tuple[str, ...], type] = {}


def block_input_model(model: nn.Module, regions: Sequence[str], normalization: tuple[float, float],
                      named_outputs: bool = False) -> BlockInputModel:
    """A BlockInputModel whose forward is declared as ``forward(self, eyes, mouth, ...)``.

    torch.jit.trace and the ONNX exporters take input names from ``inspect.signature(forward)``;
    the generic ``*blocks`` signature would leave the inputs anonymous, so each region tuple gets
    a subclass with a signature of its own.
    """
    key = tuple(regions)
    if key not in _NAMED_INPUT_CLASSES:
        def forward(self, *blocks: torch.Tensor):
            return self.run(blocks)

        p = inspect.Parameter
        forward.__signature__ = inspect.Signature(
            [p("self", p.POSITIONAL_OR_KEYWORD)]
            + [p(r, p.POSITIONAL_OR_KEYWORD, annotation=torch.Tensor) for r in key])
        name = "BlockInputModel_" + "_".join(key)
        _NAMED_INPUT_CLASSES[key] = type(name, (BlockInputModel,),
                                         {"forward": forward, "__module__": __name__})
    # eval() on the wrapper too: the ONNX exporter restores the wrapper's mode afterwards, recursively,
    # and a wrapper left in training mode would switch the model's BatchNorm and Dropout back on.
    return _NAMED_INPUT_CLASSES[key](model, key, normalization, named_outputs).eval()


def _random_blocks(shapes: dict[str, tuple[int, int]], n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """One batch of random raw blocks (float32 0..255), in ``shapes`` order."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(0, 256, (n, 1, h, w), generator=gen).float() for h, w in shapes.values())


def _reference_outputs(model: nn.Module, regions: Sequence[str],
                       normalization: tuple[float, float]) -> Callable[[Sequence[torch.Tensor]], list]:
    """The torch model's outputs for raw blocks, computed as training and prediction do (not via the
    export wrapper, so the check also covers the normalisation put into the graph)."""
    mean, std = normalization

    def outputs(blocks: Sequence[torch.Tensor]) -> list:
        model.eval()
        with torch.no_grad():
            out = model({r: (b / 255.0 - mean) / std for r, b in zip(regions, blocks)})
        return [out.logits.numpy(), out.logits.softmax(dim=1).numpy(), out.region_weights.numpy()]

    return outputs


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence torch's deprecation notices and the dynamo exporter's log lines (about optional
    torchvision operators): they say nothing about this export, whose result is checked."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # The dynamo exporter notes that all inputs share one batch axis: as intended.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _write_atomically(out: Path, write: Callable[[Any], Any]) -> None:
    """atomic_write into ``out`` (its folder made first); any failure to write is an ExportOutputError."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, write)
    except OSError as e:
        raise OutputError(f"cannot write {out}: {e.strerror or e}") from None


# ----------------------------------------------------------------------------------------------
# ONNX


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise InputError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from None
    return onnx


def _onnx_bytes(module: BlockInputModel, example: tuple[torch.Tensor, ...], exporter: str, opset: int,
                metadata: dict[str, Any]) -> bytes:
    """The serialised ONNX model with named inputs/outputs, a dynamic batch and the metadata."""
    onnx = _import_onnx()
    names = list(module.regions)
    if exporter == "trace":
        buffer = io.BytesIO()
        # torch < 2.5 has no `dynamo` argument; there the tracing exporter is the only one.
        choose = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        with _quiet_export(), torch.no_grad():
            torch.onnx.export(module, example, buffer, input_names=names, output_names=list(OUTPUT_NAMES),
                              dynamic_axes={n: {0: "N"} for n in names + list(OUTPUT_NAMES)},
                              opset_version=opset, do_constant_folding=True, **choose)
        proto = onnx.load_model_from_string(buffer.getvalue())
    else:
        proto = _dynamo_onnx_proto(module, example, opset)
    proto.doc_string = metadata["usage"]
    # Every value is JSON, so a reader decodes each one the same way: json.loads(value).
    onnx.helper.set_model_props(proto, {k: json.dumps(v, ensure_ascii=False) for k, v in metadata.items()})
    return proto.SerializeToString()


def _dynamo_onnx_proto(module: BlockInputModel, example: tuple[torch.Tensor, ...], opset: int):
    """The model through torch's torch.export-based exporter (needs onnxscript)."""
    if importlib.util.find_spec("onnxscript") is None:
        raise InputError("the dynamo ONNX exporter needs the onnxscript package: "
                                        f"{INSTALL_HINT}")
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise InputError(f"torch {torch.__version__} has no dynamo ONNX exporter: use the trace "
                                "exporter")
    batch = torch.export.Dim("N")
    with _quiet_export():
        program = torch.onnx.export(module, example, dynamo=True, input_names=list(module.regions),
                                    output_names=list(OUTPUT_NAMES), opset_version=opset, verbose=False,
                                    dynamic_shapes=tuple({0: batch} for _ in module.regions))
    return program.model_proto


def _check_onnx(path: Path, reference, shapes: dict[str, tuple[int, int]],
                metadata: dict[str, Any]) -> tuple[str, float | None]:
    """onnx.checker on the written file, then (with onnxruntime) one random batch against torch."""
    onnx = _import_onnx()
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportCheckError(f"the exported {path.name} fails onnx.checker ({first[:200]}); it was removed")
    try:
        import onnxruntime
    except ImportError:
        return "onnx.checker passed; outputs not compared (pip install onnxruntime to compare)", None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a check on a small batch: no need to take every core
    blocks = _random_blocks(shapes, CHECK_BATCH, seed=1)
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        got = session.run(list(OUTPUT_NAMES), {r: b.numpy() for r, b in zip(shapes, blocks)})
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportCheckError(f"onnxruntime {onnxruntime.__version__} cannot run the exported {path.name} "
                               f"({first[:200]}); it was removed. A lower --opset or a newer onnxruntime "
                               "may help") from None
    diff = _max_difference(got, reference(blocks), path, "onnxruntime")
    return f"onnx.checker passed; onnxruntime matches torch (max abs difference {diff:.1e})", diff


def _max_difference(got: Sequence, expected: Sequence, path: Path, runner: str) -> float:
    """Largest absolute difference over all outputs; ExportCheckError beyond CHECK_TOLERANCE."""
    import numpy as np

    diffs = {name: float(np.abs(np.asarray(g) - np.asarray(e)).max()) for name, g, e in
             zip(OUTPUT_NAMES, got, expected)}
    worst = max(diffs, key=diffs.get)
    if not diffs[worst] <= CHECK_TOLERANCE:
        raise ExportCheckError(f"{runner} gives {worst} that differ from the torch model by "
                               f"{diffs[worst]:.2e} "
                               f"(more than {CHECK_TOLERANCE:g}) on {path.name}; it was removed")
    return diffs[worst]


# ----------------------------------------------------------------------------------------------
# TorchScript


def _write_torchscript(out: Path, module: BlockInputModel, example: tuple[torch.Tensor, ...],
                       metadata: dict[str, Any]) -> None:
    """Trace the module (dict outputs need strict=False) and save it with faceblocks.json inside."""
    with _quiet_export(), torch.no_grad():
        traced = torch.jit.trace(module, example, strict=False)
    extra = {METADATA_FILE: json.dumps(metadata, ensure_ascii=False, indent=1)}
    with _quiet_export():
        _write_atomically(out, lambda f: torch.jit.save(traced, f, _extra_files=extra))


def _check_torchscript(path: Path, reference, shapes: dict[str, tuple[int, int]],
                       metadata: dict[str, Any]) -> tuple[str, float]:
    """Reload the file with torch.jit.load and compare one random batch with the torch model."""
    extra = {METADATA_FILE: ""}
    try:
        with _quiet_export():
            loaded = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportCheckError(f"the exported {path.name} does not reload ({first[:200]}); it was removed")
    if json.loads(extra[METADATA_FILE] or "null") != metadata:
        raise ExportCheckError(f"the exported {path.name} does not hold its {METADATA_FILE}; it was removed")
    blocks = _random_blocks(shapes, CHECK_BATCH, seed=1)
    with torch.no_grad():
        out = loaded(*blocks)
    got = [out[name].numpy() for name in OUTPUT_NAMES]
    diff = _max_difference(got, reference(blocks), path, "torch.jit.load")
    return f"reloaded with torch.jit.load; matches torch (max abs difference {diff:.1e})", diff
