"""export-model: ONNX and TorchScript files that run without faceblocks and match the torch model.

Checkpoints are built without training (a freshly initialised tiny model), so every test is fast;
what is checked is the export itself: input and output names, dynamic batch, normalisation inside
the graph, metadata, atomic writing, refusals and clean errors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from architectures import create_model, list_models
from cli import main
from prepro import __version__
from prepro.errors import FaceblocksError, InputError, OutputError
from training.checkpoint import make_checkpoint, save_checkpoint
from training.data import normalize
from training.errors import CheckpointError
from inference.export_model import METADATA_FILE, ExportCheckError, export_model, read_export_metadata

CLASSES = ["happy", "sad", "surprise"]
# Not the preprocess defaults, so the test sees that the checkpoint's sizes reach the graph.
BLOCK_SIZES = {"eyes": [16, 48], "mouth": [16, 32], "face": [32, 32]}
PREPROCESSING = {"blocks": {"eyes_size": [16, 48], "mouth_size": [16, 32], "face_size": [32, 32],
                            "eyes_margin": 0.2, "mouth_margin": 0.2, "rotate": True, "pad": "replicate"},
                 "face_mode": "aligned", "max_pixels": 40_000_000}
OUTPUTS = ["logits", "probabilities", "region_weights"]


def tiny_kwargs(arch: str) -> dict:
    kwargs = {"widths": [4, 8], "feat_dim": 8}
    if arch.startswith("two-branch") or arch == "ensemble":  # an ensemble's default members are both two-branch
        kwargs["context_widths"] = [4, 8]  # the whole-face branch of two-branch-face
    return kwargs


def make_tiny_checkpoint(path: Path, arch: str = "two-branch", seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """A checkpoint of a freshly initialised tiny model, saved at ``path``; returns it and the model.

    BatchNorm running statistics are randomised so that eval mode differs visibly from training
    mode: an export that ran the model in the wrong mode would not match.
    """
    torch.manual_seed(seed)
    model = create_model(arch, len(CLASSES), **tiny_kwargs(arch))
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    ckpt = make_checkpoint(arch=arch, model_kwargs=tiny_kwargs(arch), class_names=CLASSES,
                           regions=list(model.regions), block_sizes=BLOCK_SIZES, preprocessing=PREPROCESSING,
                           normalization={"mean": 0.5, "std": 0.25}, config={"model": arch},
                           model_state=model.state_dict(), epoch=3)
    save_checkpoint(ckpt, path)
    return path, model


def raw_blocks(regions, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Random raw block pixels, float32 0..255, (n, 1, H, W) per region."""
    gen = torch.Generator().manual_seed(seed)
    return {r: torch.randint(0, 256, (n, 1, *BLOCK_SIZES[r]), generator=gen).float() for r in regions}


def torch_outputs(model: torch.nn.Module, blocks: dict[str, torch.Tensor]):
    """The model's outputs with the normalisation that training and `predict` use."""
    regions = list(model.regions)
    with torch.no_grad():
        out = model(normalize({r: blocks[r] / 255.0 for r in regions}, regions))
    return out.logits.numpy(), out.region_weights.numpy()


@pytest.fixture()
def onnx():
    """The onnx package; ONNX tests are skipped only where it cannot be installed (the test extra has it)."""
    return pytest.importorskip("onnx")


@pytest.fixture()
def onnxruntime():
    return pytest.importorskip("onnxruntime")


@pytest.fixture()
def run_dir(tmp_path) -> tuple[Path, torch.nn.Module]:
    """A run folder holding a best.pt, as `faceblocks train` leaves it."""
    path, model = make_tiny_checkpoint(tmp_path / "run" / "best.pt")
    return path.parent, model


def assert_onnx_matches_torch(path: Path, model: torch.nn.Module) -> None:
    """Batches of 1 and 5 through onnxruntime give the torch logits (abs 1e-4) and sane outputs."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    regions = list(model.regions)
    for n in (1, 5):
        blocks = raw_blocks(regions, n, seed=10 + n)
        logits, probs, weights = session.run(OUTPUTS, {r: blocks[r].numpy() for r in regions})
        ref_logits, ref_weights = torch_outputs(model, blocks)
        assert logits.shape == (n, len(CLASSES)) and weights.shape == (n, len(regions))
        np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-4)
        np.testing.assert_allclose(weights, ref_weights, rtol=0, atol=1e-4)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(probs, torch.from_numpy(ref_logits).softmax(1).numpy(), atol=1e-4)


# ----------------------------------------------------------------------------------------------
# ONNX


def test_onnx_names_dynamic_batch_and_onnxruntime_match(run_dir, tmp_path, onnx, onnxruntime):
    run, model = run_dir
    out = tmp_path / "model.onnx"
    exported = export_model(run, out)  # a run folder: its best.pt
    assert exported.path == out and out.is_file() and exported.size_bytes == out.stat().st_size
    assert exported.fmt == "onnx" and exported.opset == 17 and exported.exporter == "trace"
    assert "onnxruntime matches torch" in exported.check and exported.max_abs_diff <= 1e-4
    assert exported.inputs == {"eyes": ("N", 1, 16, 48), "mouth": ("N", 1, 16, 32)}
    assert exported.outputs == {"logits": ("N", 3), "probabilities": ("N", 3), "region_weights": ("N", 2)}

    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["eyes", "mouth"]
    assert [o.name for o in proto.graph.output] == OUTPUTS
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    assert dims == [["N", 1, 16, 48], ["N", 1, 16, 32]]
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in proto.graph.input)
    assert proto.opset_import[0].version == 17
    assert_onnx_matches_torch(out, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "run"]  # no temporary file left


def test_onnx_metadata_describes_the_model(run_dir, tmp_path, onnx, onnxruntime):
    run, _ = run_dir
    out = tmp_path / "model.onnx"
    export_model(run / "best.pt", out)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    meta = {k: json.loads(v) for k, v in props.items()}  # every value is a JSON string
    assert meta["class_names"] == CLASSES
    assert meta["regions"] == ["eyes", "mouth"]
    assert meta["block_sizes"] == {"eyes": [16, 48], "mouth": [16, 32]}
    assert meta["preprocessing"] == PREPROCESSING
    assert meta["arch"] == "two-branch"
    assert meta["faceblocks_version"] == __version__
    assert meta["inputs"] == {"eyes": ["N", 1, 16, 48], "mouth": ["N", 1, 16, 32]}
    assert meta["normalization"] == {"scale": 1 / 255, "mean": 0.5, "std": 0.25, "in_graph": True}
    assert "0..255" in meta["usage"] and "eyes (N, 1, 16, 48)" in meta["usage"]
    geometry = meta["geometry"]  # enough to cut the blocks without faceblocks
    assert geometry["regions"]["eyes"]["landmarks"] == list(range(17, 27)) + list(range(36, 48))
    assert geometry["regions"]["mouth"] == {"landmarks": list(range(48, 68)), "margin": 0.2, "size": [16, 32]}
    assert geometry["rotate"] is True and geometry["pad"] == "replicate"
    assert read_export_metadata(out) == meta
    # What a consumer with onnxruntime alone sees.
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    runtime_meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(runtime_meta["class_names"]) == CLASSES


def test_onnx_opset_choice_and_bad_opset(run_dir, tmp_path, onnx, onnxruntime):
    run, model = run_dir
    exported = export_model(run, tmp_path / "m13.onnx", opset=13)
    assert exported.opset == 13 and onnx.load(str(exported.path)).opset_import[0].version == 13
    assert_onnx_matches_torch(exported.path, model)
    with pytest.raises(InputError, match="use 13 to 20"):
        export_model(run, tmp_path / "m99.onnx", opset=99)
    with pytest.raises(InputError, match="ONNX only"):
        export_model(run, tmp_path / "m.pt", fmt="torchscript", opset=17)
    with pytest.raises(InputError, match="unknown export format"):
        export_model(run, tmp_path / "m.tflite", fmt="tflite")
    assert not (tmp_path / "m99.onnx").exists() and not (tmp_path / "m.pt").exists()


def test_onnx_dynamo_exporter(run_dir, tmp_path, onnx, onnxruntime):
    pytest.importorskip("onnxscript")
    run, model = run_dir
    exported = export_model(run, tmp_path / "dynamo.onnx", onnx_exporter="dynamo")
    assert exported.exporter == "dynamo" and exported.opset == 18
    proto = onnx.load(str(exported.path))
    assert [i.name for i in proto.graph.input] == ["eyes", "mouth"]
    assert [o.name for o in proto.graph.output] == OUTPUTS
    assert read_export_metadata(exported.path)["class_names"] == CLASSES
    assert_onnx_matches_torch(exported.path, model)


# ----------------------------------------------------------------------------------------------
# TorchScript


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_export_reloads_with_metadata_and_matches(run_dir, tmp_path):
    run, model = run_dir
    out = tmp_path / "model.pt"
    exported = export_model(run, out, fmt="torchscript")
    assert exported.fmt == "torchscript" and exported.opset is None
    assert "torch.jit.load" in exported.check and exported.max_abs_diff <= 1e-4
    extra = {METADATA_FILE: ""}
    loaded = torch.jit.load(str(out), map_location="cpu", _extra_files=extra)
    meta = json.loads(extra[METADATA_FILE])
    assert meta["class_names"] == CLASSES and meta["regions"] == ["eyes", "mouth"]
    assert meta["preprocessing"] == PREPROCESSING and meta["arch"] == "two-branch"
    assert meta["faceblocks_version"] == __version__
    assert read_export_metadata(out) == meta
    assert "eyes: Tensor" in loaded.code and "mouth: Tensor" in loaded.code  # inputs named by region
    for n in (1, 5):
        blocks = raw_blocks(["eyes", "mouth"], n, seed=20 + n)
        with torch.no_grad():
            got = loaded(blocks["eyes"], blocks["mouth"])
        ref_logits, ref_weights = torch_outputs(model, blocks)
        assert sorted(got) == sorted(OUTPUTS)
        np.testing.assert_allclose(got["logits"].numpy(), ref_logits, rtol=0, atol=1e-4)
        np.testing.assert_allclose(got["region_weights"].numpy(), ref_weights, rtol=0, atol=1e-4)
        np.testing.assert_allclose(got["probabilities"].sum(1).numpy(), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Every architecture


@pytest.mark.parametrize("arch", list_models())
def test_every_architecture_exports_to_onnx(arch, tmp_path, onnx, onnxruntime):
    path, model = make_tiny_checkpoint(tmp_path / f"{arch}.pt", arch=arch)
    regions = list(model.regions)
    exported = export_model(path, tmp_path / f"{arch}.onnx")
    assert [i.name for i in onnx.load(str(exported.path)).graph.input] == regions
    assert read_export_metadata(exported.path)["regions"] == regions
    assert exported.max_abs_diff <= 1e-4
    assert_onnx_matches_torch(exported.path, model)


@pytest.mark.parametrize("arch", list_models())
def test_every_architecture_exports_to_torchscript(arch, tmp_path):
    path, model = make_tiny_checkpoint(tmp_path / f"{arch}.pt", arch=arch)
    regions = list(model.regions)
    exported = export_model(path, tmp_path / f"{arch}.ts", fmt="torchscript")
    assert list(exported.inputs) == regions and exported.max_abs_diff <= 1e-4
    assert exported.outputs["region_weights"] == ("N", len(regions))
    assert read_export_metadata(exported.path)["regions"] == regions


# ----------------------------------------------------------------------------------------------
# Refusals and errors


def test_existing_output_is_refused_unless_overwrite(run_dir, tmp_path, onnx):
    run, _ = run_dir
    out = tmp_path / "model.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="--overwrite"):
        export_model(run, out)
    assert out.read_bytes() == b"keep me"
    export_model(run, out, overwrite=True)
    assert onnx.load(str(out)).graph.input[0].name == "eyes"
    with pytest.raises(OutputError, match="is a folder"):
        export_model(run, tmp_path)
    with pytest.raises(OutputError, match="cannot write"):
        export_model(run, out / "inside-a-file.onnx")  # its folder is a file


def test_damaged_and_missing_checkpoints_are_clean_errors(tmp_path):
    good, _ = make_tiny_checkpoint(tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    (tmp_path / "empty-run").mkdir()
    for bad in (truncated, garbage, tmp_path / "missing.pt", tmp_path / "empty-run"):
        with pytest.raises(CheckpointError) as e:
            export_model(bad, tmp_path / "out.onnx")
        assert isinstance(e.value, FaceblocksError) and isinstance(e.value, CheckpointError)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "out.onnx").exists()


def test_missing_onnx_package_says_how_to_install(run_dir, tmp_path, monkeypatch):
    run, _ = run_dir
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(InputError, match=r"pip install 'faceblocks\[onnx\]'") as e:
        export_model(run, tmp_path / "model.onnx")
    assert isinstance(e.value, FaceblocksError)
    assert not (tmp_path / "model.onnx").exists()


def test_without_onnxruntime_only_the_checker_runs(run_dir, tmp_path, monkeypatch, onnx):
    run, _ = run_dir
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    exported = export_model(run, tmp_path / "model.onnx")
    assert exported.check.startswith("onnx.checker passed; outputs not compared")
    assert exported.max_abs_diff is None and exported.path.is_file()


def test_a_file_failing_its_check_is_removed(run_dir, tmp_path, monkeypatch, onnx, onnxruntime):
    import inference.export_model as export_module

    run, _ = run_dir
    monkeypatch.setattr(export_module, "CHECK_TOLERANCE", -1.0)  # nothing can match now
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        with pytest.raises(ExportCheckError, match="differ from the torch model"):
            export_model(run, tmp_path / name, fmt=fmt)
        assert not (tmp_path / name).exists()
    exported = export_model(run, tmp_path / "unchecked.onnx", check=False)
    assert exported.check.startswith("not checked") and exported.path.is_file()


def test_a_file_onnxruntime_cannot_run_is_a_clean_error(run_dir, tmp_path, monkeypatch, onnx, onnxruntime):
    def refuse(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : opset not supported\nmore detail")

    run, _ = run_dir
    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    with pytest.raises(ExportCheckError, match="cannot run the exported model.onnx .*FAIL : opset") as e:
        export_model(run, tmp_path / "model.onnx")
    assert "\n" not in str(e.value) and not (tmp_path / "model.onnx").exists()


# ----------------------------------------------------------------------------------------------
# Command line


def test_cli_export_model_prints_what_it_wrote_and_refuses_to_overwrite(run_dir, tmp_path, onnx, onnxruntime):
    run, _ = run_dir
    out = tmp_path / "exported" / "model.onnx"
    runner = CliRunner()
    r = runner.invoke(main, ["export-model", str(run), str(out)])
    assert r.exit_code == 0, r.output
    assert str(out) in r.output and "ONNX opset 17" in r.output and "KiB" in r.output
    assert "eyes (N, 1, 16, 48)" in r.output and "mouth (N, 1, 16, 32)" in r.output
    assert "logits (N, 3)" in r.output and "region_weights (N, 2)" in r.output
    assert "happy, sad, surprise" in r.output and "onnxruntime matches torch" in r.output
    assert out.is_file()

    r = runner.invoke(main, ["export-model", str(run), str(out)])
    assert r.exit_code == 1 and "exists" in r.output and "--overwrite" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(main, ["export-model", str(run), str(out), "--overwrite", "--opset", "13"])
    assert r.exit_code == 0 and "ONNX opset 13" in r.output, r.output

    ts = tmp_path / "model.pt"
    r = runner.invoke(main, ["export-model", str(run / "best.pt"), str(ts), "--format", "torchscript"])
    assert r.exit_code == 0 and "TorchScript" in r.output and "torch.jit.load" in r.output, r.output
    assert ts.is_file()


def test_cli_damaged_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"\x00" * 100)
    r = CliRunner().invoke(main, ["export-model", str(bad), str(tmp_path / "m.onnx")])
    assert r.exit_code != 0
    assert isinstance(r.exception, SystemExit)  # click's clean exit, not an escaped exception
    assert "Traceback" not in r.output
    assert r.output.startswith("Error: ") and "damaged" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_cli_help_has_examples():
    r = CliRunner().invoke(main, ["export-model", "-h"])
    assert r.exit_code == 0
    assert "Examples:" in r.output and "--format [onnx|torchscript]" in r.output and "--overwrite" in r.output
