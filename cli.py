"""The `faceblocks` command: a thin click layer over the `prepro`, `architectures`, `training` and
`inference` libraries.

Every option is generated from a settings class (`prepro.config`, `training.config`,
`inference.predictions`, `training.chain_config`, and `prepro.command_settings` for the options
that only a command has; see `prepro.click_options`), so each is defined once; the libraries write
the reports the commands print. Every library error derives from `prepro.errors.FaceblocksError`
and becomes a one-line message and exit status 1 in one place (`FaceblocksGroup`); any other
exception is a bug and keeps its traceback. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from inference.predictions import PredictOptions, PredictionTally
from prepro import __version__
from prepro.click_options import (device_option, json_option, overwrite_option, quiet_option, setting_option,
                                  setting_options, settings_from, settings_options, strict_option)
from prepro.command_settings import (DemoCommand, EvaluateCommand, ExportCommand, ExportModelCommand,
                                     InspectCommand, PreprocessCommand, PreviewCommand, RunCommand, TrainCommand)
from prepro.config import PreprocessConfig, PreprocessRun
from prepro.errors import FaceblocksError, Stopped, stop_on_termination
from prepro.model_files import LANDMARK_MODEL_TERMS, LandmarkModelFile
from prepro.settings import options
from prepro.summary_table import format_summary
from training.chain_config import RunTable, template as config_template
from training.config import TrainConfig
from inference.demo import run_demo
from training.run_summary import train_report
from training.zoo import format_cards, shipped_cards, shipped_cards_json

if TYPE_CHECKING:
    from prepro.faces import FaceCutter

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class FaceblocksGroup(click.Group):
    """Turns library errors into messages, and an interrupt into a hint to resume."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FaceblocksError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt as e:
            again = ("add --resume to the same command" if ctx.invoked_subcommand == "train"
                     else "run the same command again")
            how = f"stopped by {e}" if isinstance(e, Stopped) else "interrupted"
            raise click.ClickException(f"{how}: what was finished is kept; {again} to continue") from None


def _version_text() -> str:
    lines = [f"faceblocks {__version__}", f"landmarks: {LANDMARK_MODEL_TERMS}",
             "face detectors: dlib's HOG detector and MMOD CNN detector (Boost Software License)"]
    try:
        lines += [f"shipped model {name}: {card.get('terms', '')}" for name, card in shipped_cards().items()]
    except FaceblocksError:
        lines.append("shipped models: none readable (reinstall faceblocks)")
    return "\n".join(lines)


def _print_version(ctx: click.Context, _param: Any, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit()


@click.group(cls=FaceblocksGroup, context_settings=CONTEXT)
@click.option("-V", "--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and the models used, with their terms, and exit.")
def main() -> None:
    """Prior-attention facial-expression data: eye-and-eyebrow and mouth blocks cut with dlib's
    68 landmarks, stored as HDF5 shards, and a two-region attention network trained on them.

    \b
    Typical use:
      faceblocks predict fer2013 photo.jpg           # the shipped model, on a photo
      faceblocks preprocess data/fer2013 out/fer2013 --dataset fer2013 --face aligned
      faceblocks inspect out/fer2013
      faceblocks train out/fer2013 runs/fer2013
    """

    # A library warning (an unfinished run used, a split left small) is one line, not a source line.
    warnings.showwarning = lambda message, *_a, **_k: click.echo(f"warning: {message}", err=True)
    stop_on_termination()


def _given(ctx: click.Context) -> set[str]:
    return {n for n in ctx.params if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE}


def _say(quiet: bool) -> Callable[[str], None]:
    return (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))


def _echo(lines: list[str], err: bool = False) -> None:
    for line in lines:
        click.echo(line, err=err)


# ---------------------------------------------------------------------------------------------
# preprocess / inspect / verify


@main.command(context_settings=CONTEXT)
@click.argument("source", type=click.Path(exists=True, path_type=str))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=str))
@settings_options(PreprocessConfig, PreprocessRun)
@overwrite_option("Replace a run with other settings in OUT_DIR (only the files it provably wrote are removed).")
@settings_options(PreprocessCommand)
@strict_option("Exit non-zero when any input could not be used.")
@quiet_option()
def preprocess(source, out_dir, overwrite, retry_failed, strict, quiet, **params):
    """Cut eye-and-eyebrow and mouth blocks from SOURCE into HDF5 shards in OUT_DIR.

    SOURCE is a folder of class folders (also Kaggle's FER2013 train/ and test/), the FER2013
    CSV (.csv or .csv.gz), a label file (CSV/TSV/TXT of image paths and labels), a FERG-DB tree,
    a JAFFE folder, or a flat folder of unlabelled images. Running the same command again resumes
    an interrupted run, or adds the files a source gained. Unusable inputs are listed, not fatal.

    \b
    Examples:
      faceblocks preprocess fer2013/ out/fer2013 --dataset fer2013 --face aligned
      faceblocks preprocess fer2013.csv.gz out/fer2013-csv
      faceblocks preprocess RAF-DB/ out/rafdb --dataset rafdb
      faceblocks preprocess jaffe/ out/jaffe --dataset jaffe --split-by-subject -j 2
      faceblocks preprocess photos/ out/photos --face detect --detector cnn --eyes-size 48x144
    """

    # imported here: keeps faceblocks -h fast (numpy)
    from prepro.pipeline import run_preprocess

    summary = run_preprocess(source, out_dir, settings_from(PreprocessConfig, params),
                             settings_from(PreprocessRun, params), overwrite=overwrite, retry_failed=retry_failed,
                             progress=not quiet, log=_say(quiet))
    _echo(summary.report())
    if strict and summary.failed:
        sys.exit(1)


@main.command(context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@json_option("Print one JSON object instead of tables.")
@settings_options(InspectCommand)
def inspect(out_dir, as_json, n_fail):
    """Counts per split and label, face-box methods, quality and failures of a shard folder.

    Every shard is checked against its checksum; damaged ones are listed, left out of the counts,
    and make the exit status 1.

    \b
    Examples:
      faceblocks inspect out/fer2013
      faceblocks inspect out/fer2013 --json | jq .splits
    """

    # imported here: keeps faceblocks -h fast (numpy)
    from prepro.shards import summarize

    s = summarize(out_dir)
    click.echo(json.dumps(s, indent=1, ensure_ascii=False) if as_json else format_summary(s, n_fail))
    if s["damaged"]:
        sys.exit(1)


@main.command(context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
def verify(out_dir):
    """Check every shard of OUT_DIR against the manifest's checksums; exit 1 if any is damaged.

    \b
    Example:
      faceblocks verify out/fer2013 && echo whole
    """

    # imported here: keeps faceblocks -h fast (numpy)
    from prepro.shards import verify as verify_dir

    report = verify_dir(out_dir)
    _echo(report.notes(out_dir), err=True)
    click.echo(report.tally())
    if not report.whole:
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
# export / preview


@main.command(context_settings=CONTEXT)
@click.argument("shards_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@settings_options(ExportCommand)
@overwrite_option("Replace the files this export writes in a non-empty OUT.")
@quiet_option()
def export(shards_dir, out, fmt, regions, splits, labels, box_methods, min_quality, overwrite, quiet):
    """Export the blocks of SHARDS_DIR to OUT for other projects, with filters.

    png trees read as they are with torchvision's ImageFolder(OUT/eyes/train) or Keras'
    image_dataset_from_directory; their class indices are alphabetical, OUT/classes.txt gives
    the model's (line k: class k; README has the loading example); npz archives load with np.load(allow_pickle=False); blocks.h5
    is read like a shard. File names are made from checked ids, never raw from the data.

    \b
    Examples:
      faceblocks export out/fer2013 export/fer-png
      faceblocks export out/fer2013 export/fer-npz --format npz --regions eyes,mouth,landmarks
      faceblocks export out/jaffe export/jaffe-h5 --format hdf5 --min-quality 0.5
      faceblocks export out/fer2013 export/happy-sad --split train,val --label happy --label sad
    """

    # imported here: keeps faceblocks -h fast (numpy)
    from prepro.export import export_blocks

    summary = export_blocks(shards_dir, out, fmt=fmt, regions=regions, splits=splits, labels=labels,
                            box_methods=box_methods, min_quality=min_quality, overwrite=overwrite, progress=not quiet)
    _echo(summary.report())


_CUT_OPTIONS = ("face", "detector", "min_face", "min_face_frac", "eyes_size", "mouth_size", "face_size",
                "eyes_margin", "mouth_margin", "face_margin", "rotate", "pad", "max_megapixels", "work_max_side",
                "second_look", "landmarks", "auto_trust")


# Run settings that only listing a dataset source uses: preview and predict take images as they are.
_LISTING_ONLY = ("image_root", "votes_file")
_NOT_CUT = tuple(o.name for o in options(PreprocessConfig) if o.name not in _CUT_OPTIONS)


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, metavar="SHARDS_DIR|INPUT...")
@settings_options(PreviewCommand)
@settings_options(PreprocessConfig, PreprocessRun, skip=_NOT_CUT + ("jobs", "backend", "scheduler", "chunk_size")
                  + _LISTING_ONLY)
def preview(inputs, out_png, split, labels, count, seed, worst, **params):
    """A contact sheet PNG: aligned faces with landmarks and block boxes, beside the blocks.

    Give a shard folder (made by `preprocess`) to see what was stored, or raw images, folders or
    glob patterns to see what `preprocess` would cut from them (the face and block options apply
    to raw images only). Green dots are the 68 landmarks, the blue and red outlines the eyes and
    mouth blocks; each tile gives the label (or file name), the landmark quality and how the face
    box was found. A raw image without a usable face gets a tile that says why.

    \b
    Examples:
      faceblocks preview out/fer2013
      faceblocks preview out/fer2013 --split test --label happy,sad --count 10 --out happy-sad.png
      faceblocks preview out/fer2013 --worst 24 --out worst.png
      faceblocks preview photos/ --face detect --out photos-preview.png
      faceblocks preview 'raw/**/*.jpg' --worst 10
    """

    # imported here: keeps faceblocks -h fast (numpy)
    from prepro.preview import contact_sheet, contact_sheet_images

    given = _given(click.get_current_context())
    if len(inputs) == 1 and (Path(inputs[0]) / "manifest.json").is_file():
        wrong = sorted(given & set(_CUT_OPTIONS + ("landmark_model",)))
        if wrong:
            raise click.UsageError(f"{', '.join('--' + w.replace('_', '-') for w in wrong)} only apply to raw images; "
                                   f"{inputs[0]} is a shard folder, cut as its manifest says")
        click.echo(str(contact_sheet(inputs[0], out_png, split=split, labels=labels, count=worst or count,
                                     seed=seed, worst=worst is not None)))
        return
    ignored = [f for f, n in (("--split", "split"), ("--label", "labels")) if n in given]
    if ignored:
        raise click.UsageError(f"{' and '.join(ignored)} only apply to a shard folder; {inputs[0]} is not one "
                               "(it has no manifest.json)")
    sheet = contact_sheet_images(inputs, out_png, _cutter(params), count=worst or count, seed=seed,
                                 worst=worst is not None)
    _echo(sheet.report())


def _cutter(params: dict[str, Any]) -> FaceCutter:
    # imported here: keeps faceblocks -h fast (numpy)
    from prepro.faces import FaceCutter

    landmark = LandmarkModelFile.find(params.get("landmark_model"))
    landmark.load()
    return FaceCutter(settings_from(PreprocessConfig, params).cut_settings(), landmark)


# ---------------------------------------------------------------------------------------------
# train / evaluate / predict


@main.command(context_settings=CONTEXT)
@click.argument("shards_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@settings_options(TrainConfig, skip=("progress",))
@settings_options(TrainCommand)
@overwrite_option("Replace a finished or stopped run in RUN_DIR.")
@quiet_option()
def train(shards_dir, run_dir, resume, overwrite, quiet, **params):
    """Train a network on the train split of SHARDS_DIR, selecting the best epoch by macro-F1 on a
    validation part (by default a seeded 10% held out of the train split).

    Writes log.csv, curves.png, best.pt and last.pt to RUN_DIR. For several GPUs or machines,
    run `torchrun --nproc_per_node N -m training.train SHARDS_DIR RUN_DIR`.

    \b
    Examples:
      faceblocks train out/fer2013 runs/two-branch --epochs 30
      faceblocks train out/fer2013 runs/quick --max-minutes 30 --class-weighting sqrt
      faceblocks train out/fer2013 runs/two-branch --resume --device cuda
    """
    # imported here: keeps faceblocks -h fast (numpy, torch)
    from training.train import train as train_run

    given = _given(click.get_current_context())
    cfg, changes = None, {}
    if resume:
        changes = settings_from(TrainConfig, params, only_given=given).to_dict() if given - {"resume", "quiet"} else {}
        changes = {k: v for k, v in changes.items() if k in given}
        if "quiet" in given:
            changes["progress"] = not quiet
    else:
        cfg = settings_from(TrainConfig, {**params, "progress": not quiet})
    result = train_run(shards_dir, run_dir, cfg, resume=(changes or True) if resume else False, overwrite=overwrite,
                       log=_say(False))
    _echo(train_report(result, shards_dir, run_dir, cfg.val_split if cfg is not None else "holdout"))


@main.command(context_settings=CONTEXT)
@click.argument("model", metavar="MODEL")
@click.argument("shards_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@settings_options(EvaluateCommand, skip=("allow_mismatch",))
@device_option()
@setting_options(EvaluateCommand, "allow_mismatch")
@json_option("Print the metrics as JSON.")
def evaluate(model, shards_dir, split, tta_flip, tta_shift, out_dir, device, allow_mismatch, as_json):
    """Accuracy, macro-F1, per-class scores, confusion matrix and region attention on a split.

    MODEL is a run folder, a .pt checkpoint, or the name of a shipped model (`faceblocks models`).
    SHARDS_DIR may come from another dataset (train on FER2013, test on CK+ or JAFFE): the labels
    both share are evaluated, the others counted and left out.

    \b
    Examples:
      faceblocks evaluate runs/two-branch out/fer2013 --split val
      faceblocks evaluate fer2013 out/fer2013 --split val --out eval-shipped
      faceblocks evaluate fer2013 out/jaffe --split all      # writes out/jaffe-eval-fer2013-all/
      faceblocks evaluate runs/two-branch/best.pt out/jaffe --split val,test --tta-flip
    """
    # imported here: keeps faceblocks -h fast (numpy, torch)
    from training.evaluate import evaluate as evaluate_run, format_metrics_table

    metrics = evaluate_run(model, shards_dir, split=split, tta_flip=tta_flip, tta_shift=tta_shift, out_dir=out_dir,
                           device=device, allow_preprocessing_mismatch=allow_mismatch)
    if as_json:  # the JSON alone: its "files" say where they went
        click.echo(json.dumps(metrics, indent=1))
        return
    click.echo(format_metrics_table(metrics))
    click.echo(f"metrics.json, confusion.json and confusion.png in {Path(metrics['files']['metrics.json']).parent}")


# The cut settings predict may take from the command line instead of the model's.
_PREDICT_OVERRIDES = ("face", "detector", "min_face", "min_face_frac", "second_look", "landmarks", "auto_trust")
_NOT_PREDICT = ("format", "dataset", "shard_size", "val_frac", "test_frac", "split_seed", "split_by_subject", "limit",
                "eyes_size", "mouth_size", "face_size", "eyes_margin", "mouth_margin", "face_margin", "rotate", "pad",
                "backend", "scheduler", "chunk_size", "work_max_side", "max_megapixels") + _LISTING_ONLY


@main.command(context_settings=CONTEXT)
@click.argument("model", metavar="MODEL")
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@json_option("One JSON object per face and image (or frame), one per line.")
@setting_options(PredictOptions, "csv", "annotate", "every", "camera", "show", "smooth", "sequence", "min_quality")
@strict_option("Exit non-zero when any input gave no prediction (without it, only when none did).")
@setting_options(PredictOptions, "tta_flip", "tta_shift")
@settings_options(PreprocessConfig, PreprocessRun, skip=_NOT_PREDICT, overrides=_PREDICT_OVERRIDES)
@setting_options(PredictOptions, "batch_size", "device")
@quiet_option()
def predict(model, inputs, as_json, strict, quiet, **params):
    """Classify every face in images, folders, glob patterns or videos (INPUT...).

    MODEL is a run folder, a .pt checkpoint or the name of a shipped model (`faceblocks models`;
    `fer2013` works out of the box). Faces are found and cut as the model's training shards were,
    unless --face/--detector/--min-face say otherwise (e.g. --face detect for group photos of a
    model trained on crops). For each face: its box, label, class probabilities and region
    attention weights. An image that cannot be read or holds no face is reported, not fatal.

    \b
    Examples:
      faceblocks predict fer2013 photo.jpg
      faceblocks predict runs/fer2013/best.pt 'photos/**/*.jpg' --json > predictions.jsonl
      faceblocks predict fer2013 group.jpg --annotate annotated/
      faceblocks predict fer2013 clip.mp4 --every 5 --csv clip.csv --annotate clip-labelled.mp4
      faceblocks predict fer2013 --camera 0 --csv live.csv --smooth 0.8
    """

    # imported here: keeps faceblocks -h fast (numpy)
    from inference.predict import predict as predict_run

    if as_json and params["csv"] == "-":
        raise click.UsageError("--csv - and --json would both write to standard output: give --csv a file")
    if bool(inputs) == (params["camera"] is not None):
        raise click.UsageError("give INPUT... or --camera, one of the two")
    given = _given(click.get_current_context())
    own = {o.name: params[o.name] for o in options(PredictOptions) if o.name in params}
    opts = PredictOptions(**own, overrides={k: params[k] for k in _PREDICT_OVERRIDES if k in given},
                          progress=not quiet and not as_json and params["camera"] is None)
    tally = PredictionTally()
    to_stderr = as_json or opts.csv == "-"  # standard output carries the JSON lines or the CSV alone
    for r in predict_run(model, inputs, opts):
        tally.add(r)
        if as_json:
            click.echo(json.dumps(r.to_dict(), ensure_ascii=False, allow_nan=False))
        else:
            _echo(r.lines(), err=to_stderr)
    click.echo(tally.line(opts.annotate), err=to_stderr)
    failure = tally.failure(strict)
    if failure:
        raise click.ClickException(failure)


@main.command(context_settings=CONTEXT)
@json_option("The model cards as one JSON object.")
def models(as_json):
    """The models shipped with faceblocks, with their model cards.

    A shipped model's name works wherever a run folder or checkpoint is accepted (predict,
    evaluate, export-model); an existing path of the same name wins.

    \b
    Examples:
      faceblocks models
      faceblocks models --json | jq .fer2013.publictest
      faceblocks predict fer2013 photo.jpg
    """

    click.echo(json.dumps(shipped_cards_json(), indent=1, ensure_ascii=False, allow_nan=False) if as_json
               else format_cards())


# ---------------------------------------------------------------------------------------------
# run: the chain


@main.command("run", context_settings=CONTEXT)
@click.argument("config", required=False, type=click.Path(exists=True, dir_okay=False, path_type=str))
@setting_option(RunTable, "out", help="Output folder (default: the config's run.out, relative to the config file).")
@overwrite_option("The config changed: redo the stages that depend on the changed tables.")
@setting_option(PreprocessRun, "jobs", required_none=True, help="Preprocessing workers (default: data.jobs).")
@settings_options(RunCommand)
@quiet_option("No progress bars or stage messages.")
def run_cmd(config, out, overwrite, jobs, template, quiet):
    """Preprocess, train, evaluate and preview from one TOML CONFIG, into one folder.

    The folder gets config.toml (the config used), shards/, run/, eval-<split>/, preview.png
    and report.md (figures and pictures). Running it again skips every stage whose output is
    complete and valid and resumes an interrupted one. `--template` prints every key with its
    default and allowed values.

    \b
    Examples:
      faceblocks run --template > fer2013.toml      # then set data.source and run.out
      faceblocks run fer2013.toml
      faceblocks run fer2013.toml --out runs/fer2013-b --overwrite
    \b
    A minimal config:
      [run]
      out = "runs/fer2013-all"
      [data]
      source = "data/fer2013"
      dataset = "fer2013"
      face = "aligned"
      [train]
      model = "two-branch"
      epochs = 30
    """

    # imported here: keeps faceblocks -h fast (numpy)
    from training.chain import run_chain

    if template:
        click.echo(config_template())
        return
    if config is None:
        raise click.UsageError("give a CONFIG file (or --template to print one)")
    result = run_chain(config, out_dir=out, overwrite=overwrite, jobs=jobs, progress=not quiet, log=_say(quiet))
    _echo(result.lines())


# ---------------------------------------------------------------------------------------------
# demo


@main.command(context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=str), default="demo-out")
@settings_options(DemoCommand)
@setting_option(TrainConfig, "epochs", default=15, help="Training epochs.")
@setting_option(PreprocessRun, "jobs")
@quiet_option("No progress bars.")
def demo(out_dir, per_class, epochs, jobs, quiet):
    """The first run, no download needed: the shipped model on a photo, then sample, preprocess,
    train, evaluate and preview on a synthetic sample.

    First the shipped FER2013 model predicts the expression on a real photograph (scikit-image's
    public-domain astronaut portrait) and writes an annotated copy. Then a small synthetic
    labelled sample (that photograph warped per expression, with varied pose, scale, lighting and
    noise) is preprocessed, a two-branch network trained on it, evaluated and previewed. Each
    finished stage is kept: running it again continues. The sample is one synthetic identity,
    for trying the tool only.

    \b
    Example:
      faceblocks demo demo-out
    """

    run_demo(Path(out_dir), per_class=per_class, epochs=epochs, jobs=jobs, progress=not quiet,
             echo=click.echo, say=_say(quiet))


# ---------------------------------------------------------------------------------------------
# export-model


@main.command("export-model", context_settings=CONTEXT)
@click.argument("model", metavar="MODEL")
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@settings_options(ExportModelCommand, skip=("no_check",))
@overwrite_option("Replace OUT if it exists.")
@setting_options(ExportModelCommand, "no_check")
def export_model(model, out, fmt, opset, overwrite, no_check):
    """Write a trained model as one ONNX or TorchScript file that other projects can run.

    MODEL is a run folder, a .pt checkpoint or the name of a shipped model. Inputs are the region
    blocks by name (eyes, mouth, and face when the model uses it): float32 (N, 1, H, W) raw grey
    values 0..255 at the checkpoint's block sizes; the normalisation is in the graph. Outputs:
    logits, probabilities and region_weights. The file holds the class names, regions, block
    sizes and preprocessing settings (ONNX metadata_props as JSON; TorchScript faceblocks.json).
    After writing, the file is checked against the torch model when onnx and onnxruntime are
    installed; a file that fails is removed.

    \b
    Examples:
      faceblocks export-model fer2013 fer2013.onnx
      faceblocks export-model runs/fer2013/best.pt fer2013.pt --format torchscript
      faceblocks export-model runs/fer2013 fer2013.onnx --opset 13 --overwrite
    """
    # imported here: keeps faceblocks -h fast (numpy, torch)
    from inference.export_model import export_model as export_checkpoint

    exported = export_checkpoint(model, out, fmt=fmt, opset=opset, overwrite=overwrite, check=not no_check)
    _echo(exported.summary_lines())


# ---------------------------------------------------------------------------------------------
# ensemble


@main.command(context_settings=CONTEXT)
@click.argument("models", nargs=-1, required=True, metavar="MODEL MODEL...")
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@overwrite_option("Replace OUT if it exists (never one of the members).")
def ensemble(models, out, overwrite):
    """Join two or more trained models into one checkpoint that averages their probabilities.

    Each MODEL is a run folder, a .pt checkpoint or the name of a shipped model; OUT is the .pt
    file to write. The members must have the same classes, block cutting and holdout; they may be
    different networks (the ensemble reads every region one of them uses). OUT works wherever a
    model is taken (predict, evaluate, export-model, train --teachers) but train --init: fine-tune
    its members instead.

    \b
    Examples:
      faceblocks ensemble fer2013 runs/fer2013-face fer2013-both.pt
      faceblocks evaluate fer2013-both.pt shards/fer2013 --split test
    """
    # imported here: keeps faceblocks -h fast (numpy, torch)
    from training.ensemble_checkpoint import write_ensemble

    path = write_ensemble(models, out, overwrite=overwrite)
    click.echo(f"wrote {path}: the ensemble of {', '.join(models)}")


if __name__ == "__main__":
    main()
