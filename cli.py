"""The `faceblocks` command: a thin click layer over the `prepro`, `architectures`, `training` and
`inference` libraries.

Options that set up preprocessing or training are generated from the settings dataclasses
(`prepro.config`, `training.config`; see `prepro.settings`), so each option is defined once. Every
library error derives from `prepro.errors.FaceblocksError` and becomes a one-line message and
exit status 1 in one place (`FaceblocksGroup`); any other exception is a bug and keeps its
traceback. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from prepro import __version__
from prepro.click_options import (device_option, json_option, min_quality_option, overwrite_option, quiet_option,
                                   setting_option, settings_from, settings_options, strict_option, tta_flip_option)
from prepro.errors import STOP_REQUESTED, FaceblocksError, Stopped
from prepro.settings import options

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _stop_on_termination() -> None:
    import signal

    def stop(signum: int, _frame: Any) -> None:
        STOP_REQUESTED.append(signal.Signals(signum).name)
        raise Stopped(signal.Signals(signum).name)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)
    default_hook = sys.unraisablehook

    def quiet_stop(unraisable: Any) -> None:
        # A stop raised inside a callback Python ignores: the run stops at its next check instead.
        if not isinstance(unraisable.exc_value, Stopped):
            default_hook(unraisable)

    sys.unraisablehook = quiet_stop


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
    from prepro.landmarks import LANDMARK_MODEL_TERMS

    lines = [f"faceblocks {__version__}", f"landmarks: {LANDMARK_MODEL_TERMS}",
             "face detectors: dlib's HOG detector and MMOD CNN detector (Boost Software License)"]
    try:
        from training.zoo import shipped_cards

        for name, card in shipped_cards().items():
            lines.append(f"shipped model {name}: {card.get('terms', '')}")
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
    import warnings

    # A library warning (an unfinished run used, a split left small) is one line, not a source line.
    warnings.showwarning = lambda message, *_a, **_k: click.echo(f"warning: {message}", err=True)
    _stop_on_termination()


def _given(ctx: click.Context) -> set[str]:
    return {n for n in ctx.params if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE}


def _say(quiet: bool) -> Callable[[str], None]:
    return (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))


# ---------------------------------------------------------------------------------------------
# preprocess / inspect / verify


def _preprocess_classes():
    from prepro.config import PreprocessConfig, PreprocessRun

    return PreprocessConfig, PreprocessRun


@main.command(context_settings=CONTEXT)
@click.argument("source", type=click.Path(exists=True, path_type=str))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=str))
@settings_options(*_preprocess_classes())
@overwrite_option("Replace a run with other settings in OUT_DIR (only the files it provably wrote are removed).")
@click.option("--retry-failed", is_flag=True, help="Try the inputs listed as failures again.")
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
    from prepro.pipeline import run_preprocess

    config_cls, run_cls = _preprocess_classes()
    summary = run_preprocess(source, out_dir, settings_from(config_cls, params), settings_from(run_cls, params),
                             overwrite=overwrite, retry_failed=retry_failed, progress=not quiet, log=_say(quiet))
    rate = summary.written_now / summary.seconds if summary.seconds > 0 else 0.0
    click.echo(f"{summary.samples} samples in {out_dir}; {summary.failed} of {summary.items} inputs could not be "
               f"used; {summary.written_now} written now in {summary.seconds:.1f} s ({rate:.0f} images/s)")
    for reason, count in list(summary.failure_reasons.items())[:8]:
        click.echo(f"  {count:>7}  {reason}")
    if summary.failed:
        click.echo(f"every failure is listed by `faceblocks inspect {out_dir}`")
    if strict and summary.failed:
        sys.exit(1)


@main.command(context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@json_option("Print one JSON object instead of tables.")
@click.option("--failures", "n_fail", default=20, show_default=True, type=click.IntRange(0),
              help="How many failures to list in the text output (all in --json).")
def inspect(out_dir, as_json, n_fail):
    """Counts per split and label, face-box methods, quality and failures of a shard folder.

    Every shard is checked against its checksum; damaged ones are listed, left out of the counts,
    and make the exit status 1.

    \b
    Examples:
      faceblocks inspect out/fer2013
      faceblocks inspect out/fer2013 --json | jq .splits
    """
    from prepro.shards import summarize
    from prepro.summary_table import format_summary

    s = summarize(out_dir)
    if as_json:
        click.echo(json.dumps(s, indent=1, ensure_ascii=False))
        sys.exit(1 if s["damaged"] else 0)
    click.echo(format_summary(s, n_fail))
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
    from prepro.shards import verify as verify_dir

    report = verify_dir(out_dir)
    for p in report.problems:
        click.echo(f"DAMAGED {p}", err=True)
    if not report.complete:
        click.echo(f"INCOMPLETE: the run in {out_dir} has not finished; rerun the same preprocess "
                   "command to resume", err=True)
    for p in report.foreign:
        click.echo(f"note: {p} was not written by faceblocks (left alone)", err=True)
    click.echo(f"{len(report.ok)} shards whole, {len(report.problems)} problems")
    if not report.whole:
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
# export / preview


def _names(values) -> list[str] | None:
    """Repeated options and comma lists alike: ('train,val', 'test') -> ['train', 'val', 'test']."""
    names = [x.strip() for v in values or () for x in v.split(",") if x.strip()]
    return names or None


@main.command(context_settings=CONTEXT)
@click.argument("shards_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.option("--format", "fmt", default="png", show_default=True, type=click.Choice(["png", "npz", "hdf5"]),
              help="png: class folders OUT/<region>/<split>/<label>/<id>.png + manifest.csv; npz: "
                   "OUT/<split>.npz; hdf5: one shard-format file OUT/blocks.h5.")
@click.option("--regions", default="eyes,mouth", show_default=True, metavar="LIST",
              help="What to export, from eyes,mouth,face,landmarks (landmarks: OUT/landmarks.npz with "
                   "png, arrays in each .npz; hdf5 always holds everything).")
@click.option("--split", "splits", multiple=True, metavar="NAME[,NAME]",
              help="Splits to export (repeatable or a comma list; default all).")
@click.option("--label", "labels", multiple=True, metavar="NAME[,NAME]",
              help="Canonical labels to export, or unlabelled (repeatable or a comma list; default all).")
@click.option("--box-method", "box_methods", multiple=True, metavar="NAME[,NAME]",
              help="Keep samples whose face box was found this way: hog, cnn, estimated, estimated_fallback, "
                   "given (repeatable; default all).")
@min_quality_option(None, "Keep samples whose landmark quality is at least this.")
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
    from prepro.export import export_blocks

    summary = export_blocks(shards_dir, out, fmt=fmt, regions=regions, splits=_names(splits), labels=_names(labels),
                            box_methods=_names(box_methods), min_quality=min_quality, overwrite=overwrite,
                            progress=not quiet)
    click.echo(f"{summary.samples} samples exported to {out} as {fmt} ({', '.join(summary.regions)}); "
               f"{_count(len(summary.files), 'file', 'files')} written" +
               (f", {len(summary.removed)} left by the previous export removed" if summary.removed else ""))
    for split, per in summary.counts.items():
        click.echo(f"  {split:<6} " + ", ".join(f"{lab} {n}" for lab, n in per.items()))


_CUT_OPTIONS = ("face", "detector", "min_face", "min_face_frac", "eyes_size", "mouth_size", "face_size",
                "eyes_margin", "mouth_margin", "face_margin", "rotate", "pad", "max_megapixels", "work_max_side",
                "second_look", "landmarks")


# Run settings that only listing a dataset source uses: preview and predict take images as they are.
_LISTING_ONLY = ("image_root", "votes_file")


def _cut_skip() -> tuple[str, ...]:
    config_cls, _ = _preprocess_classes()
    return tuple(o.name for o in options(config_cls) if o.name not in _CUT_OPTIONS)


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, metavar="SHARDS_DIR|INPUT...")
@click.option("--out", "out_png", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="The image to write (.png, .jpg, .webp, .bmp; default: SHARDS_DIR/preview.png, or "
                   "preview.png for raw images; -SPLIT, -LABELS and -worst are added to the default name "
                   "for those requests, and a default name never replaces a file faceblocks did not write).")
@click.option("--split", default=None, help="Shards only: only this split (train, val, test).")
@click.option("--label", "labels", multiple=True, metavar="NAME[,NAME]",
              help="Shards only: only these labels (repeatable or a comma list).")
@click.option("--count", default=24, show_default=True, type=click.IntRange(1, 400),
              help="Samples on the sheet (5 per row).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="Seed of the random choice.")
@click.option("--worst", default=None, type=click.IntRange(1, 400), metavar="N",
              help="Show the N lowest-quality samples instead (to find landmark failures).")
@settings_options(*_preprocess_classes(), skip=_cut_skip() + ("jobs", "backend", "scheduler", "chunk_size")
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
    from prepro.preview import contact_sheet, contact_sheet_images

    ctx = click.get_current_context()
    if len(inputs) == 1 and (Path(inputs[0]) / "manifest.json").is_file():
        wrong = sorted(_given(ctx) & set(_CUT_OPTIONS + ("landmark_model",)))
        if wrong:
            raise click.UsageError(f"{', '.join('--' + w.replace('_', '-') for w in wrong)} only apply to raw images; "
                                   f"{inputs[0]} is a shard folder, cut as its manifest says")
        path = contact_sheet(inputs[0], out_png, split=split, labels=_names(labels), count=worst or count, seed=seed,
                             worst=worst is not None)
        click.echo(str(path))
        return
    ignored = [f for f, n in (("--split", "split"), ("--label", "labels")) if n in _given(ctx)]
    if ignored:
        raise click.UsageError(f"{' and '.join(ignored)} only apply to a shard folder; {inputs[0]} is not one "
                               "(it has no manifest.json)")
    sheet = contact_sheet_images(inputs, out_png, _cutter(params), count=worst or count,
                                 seed=seed, worst=worst is not None)
    for path, reason in sheet.failures:
        click.echo(f"{path}: {reason}")
    click.echo(f"{sheet.path} ({sheet.shown} of {sheet.images} images, {len(sheet.failures)} without blocks)")


def _cutter(params: dict[str, Any]):
    from prepro.faces import FaceCutter
    from prepro.landmarks import LandmarkModelFile

    config_cls, _ = _preprocess_classes()
    cfg = settings_from(config_cls, params)
    landmark = LandmarkModelFile.find(params.get("landmark_model"))
    landmark.load()
    return FaceCutter(cfg.cut_settings(), landmark)


# ---------------------------------------------------------------------------------------------
# train / evaluate / predict


def _train_class():
    from training.config import TrainConfig

    return TrainConfig


@main.command(context_settings=CONTEXT)
@click.argument("shards_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@settings_options(_train_class(), skip=("progress",))
@click.option("--resume", is_flag=True, help="Continue the stopped run in RUN_DIR with its stored settings "
              "(only run-control options such as --epochs or --device may be given).")
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
    from training.train import train as train_run

    given = _given(click.get_current_context())
    cfg_cls = _train_class()
    cfg, changes = None, {}
    if resume:
        changes = settings_from(cfg_cls, params, only_given=given).to_dict() if given - {"resume", "quiet"} else {}
        changes = {k: v for k, v in changes.items() if k in given}
        if "quiet" in given:
            changes["progress"] = not quiet
    else:
        cfg = settings_from(cfg_cls, {**params, "progress": not quiet})
    result = train_run(shards_dir, run_dir, cfg, resume=(changes or True) if resume else False, overwrite=overwrite,
                       log=_say(False))
    from training.run_records import stop_text

    why = stop_text(result.stop_reason)
    click.echo(f"best validation macro-F1 {result.best_val_macro_f1:.4f} at epoch {result.best_epoch} "
               f"({_count(result.epochs_done, 'epoch', 'epochs')}, {why}); checkpoints in {run_dir}")
    split = _report_split(shards_dir, cfg.val_split if cfg is not None else "holdout")
    if split:
        click.echo(f"next: faceblocks evaluate {run_dir} {shards_dir} --split {split}")


def _report_split(shards_dir: str, val_split: str) -> str | None:
    """The split to report a run on: test if it has samples, else val when val did not choose the epoch."""
    from prepro.shards import Manifest

    try:
        counts = {s: sum(r.n_samples for r in Manifest.load(shards_dir).shards_of(s)) for s in ("test", "val")}
    except FaceblocksError:
        return None
    if counts["test"] and val_split != "test":
        return "test"
    return "val" if counts["val"] and val_split != "val" else None


@main.command(context_settings=CONTEXT)
@click.argument("model", metavar="MODEL")
@click.argument("shards_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--split", default="test", show_default=True, metavar="NAME[,NAME]|all",
              help="train, val or test; several scored together (val,test); or all, every split: for a dataset "
                   "the model never trained on (CK+, JAFFE), whose own split is no test set for it.")
@tta_flip_option("Average the predictions of each face and its mirror image [default: as the model's card "
                 "says: on for the shipped fer2013 model, off for your own runs].")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Where metrics.json and the confusion matrix go [default: the run folder; for a shipped "
                   "model, SHARDS_DIR-eval-MODEL-SPLIT beside SHARDS_DIR].")
@device_option()
@click.option("--allow-mismatch", is_flag=True,
              help="Evaluate even if the shards' blocks were cut with other margins, rotation or padding.")
@json_option("Print the metrics as JSON.")
def evaluate(model, shards_dir, split, tta_flip, out_dir, device, allow_mismatch, as_json):
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
    from training.evaluate import evaluate as evaluate_run
    from training.evaluate import format_metrics_table

    metrics = evaluate_run(model, shards_dir, split=split, tta_flip=tta_flip, out_dir=out_dir, device=device,
                           allow_preprocessing_mismatch=allow_mismatch)
    if as_json:  # the JSON alone: its "files" say where they went
        click.echo(json.dumps(metrics, indent=1))
        return
    click.echo(format_metrics_table(metrics))
    click.echo(f"metrics.json, confusion.json and confusion.png in {Path(metrics['files']['metrics.json']).parent}")


# The cut settings predict may take from the command line instead of the model's.
_PREDICT_OVERRIDES = ("face", "detector", "min_face", "min_face_frac", "second_look", "landmarks")


@main.command(context_settings=CONTEXT)
@click.argument("model", metavar="MODEL")
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@json_option("One JSON object per face and image (or frame), one per line.")
@click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
              help="Also write every face as a CSV row (path, frame, time, box, label, probabilities, regions); "
                   "- writes them to standard output (and the other lines to standard error).")
@click.option("--annotate", "annotate_path", default=None, type=click.Path(path_type=str),
              help="Draw boxes, landmarks, blocks and labels: a folder for images, a .mp4 file for a video.")
@click.option("--every", default=1, show_default=True, type=click.IntRange(1),
              help="Videos: predict on every Nth frame.")
@click.option("--camera", default=None, metavar="N|URL",
              help="Live frames from this camera index or stream URL instead of INPUTs, until it ends or Ctrl-C "
                   "(everything so far is written).")
@click.option("--show/--no-show", default=None,
              help="With --camera: show the annotated frames in a window [default: when a display exists].")
@click.option("--smooth", default=0.0, show_default=True, type=click.FloatRange(0, 0.99),
              help="Videos and sequences: smooth each face track's probabilities (exponential moving average "
                   "with this weight on the past; the frame's own stay in raw_probabilities).")
@click.option("--sequence", is_flag=True,
              help="The image INPUTs are the frames of one sequence, in order: their faces get track ids.")
@min_quality_option(0.1, "Give no label to a face whose landmark quality is below this (its blocks are likely "
                        "misplaced); an image left without a face says so.")
@strict_option("Exit non-zero when any input gave no prediction (without it, only when none did).")
@tta_flip_option("Average each face's prediction with its mirror image's [default: as the model's card says: "
                 "on for the shipped fer2013 model, off for your own runs].")
@settings_options(*_preprocess_classes(), skip=tuple(n for n in ("format", "dataset", "shard_size", "val_frac",
                  "test_frac", "split_seed", "split_by_subject", "limit", "eyes_size", "mouth_size", "face_size",
                  "eyes_margin", "mouth_margin", "face_margin", "rotate", "pad", "backend", "scheduler",
                  "chunk_size", "work_max_side", "max_megapixels") + _LISTING_ONLY),
                  overrides=_PREDICT_OVERRIDES)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 4096),
              help="Faces per forward pass.")
@device_option()
@quiet_option()
def predict(model, inputs, as_json, csv_path, annotate_path, every, camera, show, smooth, sequence, min_quality, strict,
            tta_flip, batch_size, device, quiet, **params):
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
    from inference.predict import PredictOptions, predict as predict_run

    if as_json and csv_path == "-":
        raise click.UsageError("--csv - and --json would both write to standard output: give --csv a file")
    if bool(inputs) == (camera is not None):
        raise click.UsageError("give INPUT... or --camera, one of the two")
    given = _given(click.get_current_context())
    overrides = {k: params[k] for k in _PREDICT_OVERRIDES if k in given}
    opts = PredictOptions(overrides=overrides, jobs=params["jobs"], batch_size=batch_size, every=every,
                          device=device, landmark_model=params.get("landmark_model"), annotate=annotate_path,
                          min_quality=min_quality, csv=csv_path, tta_flip=tta_flip,
                          progress=not quiet and not as_json and camera is None, camera=camera, show=show,
                          smooth=smooth, sequence=sequence)
    n_images = n_faces = n_bad = 0
    annotated = False
    to_stderr = as_json or csv_path == "-"  # standard output carries the JSON lines or the CSV alone
    for r in predict_run(model, inputs, opts):
        n_images += 1
        n_faces += len(r.faces)
        n_bad += r.error is not None
        annotated = annotated or r.annotated is not None
        if as_json:
            click.echo(json.dumps(r.to_dict(), ensure_ascii=False, allow_nan=False))
        else:
            _echo_prediction(r, err=to_stderr)
    images = _count(n_images, "image or frame", "images or frames")
    click.echo(f"{images}, {_count(n_faces, 'face', 'faces')}, {n_bad} without a prediction"
               + (f"; annotated in {annotate_path}" if annotated else ""), err=to_stderr)
    if n_bad == n_images or (strict and n_bad):
        raise click.ClickException(f"{n_bad} of {images} gave no prediction"
                                   + (" (--strict)" if n_bad < n_images else ""))


def _count(n: int, one: str, many: str) -> str:
    """``n`` with the noun that fits it: "1 face", "2 faces", "0 faces"."""
    return f"{n} {one if n == 1 else many}"


def _echo_prediction(r, err: bool = False) -> None:
    from prepro.inputs import printable

    where = printable(r.path) + (f" [frame {r.frame}, {r.time:.2f} s]" if r.frame is not None else "")
    if r.error:
        click.echo(f"{where}: {r.error}", err=err)
    for k, f in enumerate(r.faces):
        top = sorted(f.probabilities.items(), key=lambda kv: -kv[1])[:3]
        box = ",".join(f"{v:.0f}" for v in f.box)
        click.echo(f"{where} face {k + 1} [{box}; {f.box_method}, quality {f.quality:.2f}]: {f.label} ("
                   + ", ".join(f"{c} {p:.2f}" for c, p in top) + ") regions "
                   + ", ".join(f"{n} {w:.2f}" for n, w in f.region_weights.items()), err=err)


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
    from training.zoo import format_card, shipped_cards, shipped_geometry, shipped_parameters

    cards, parameters = shipped_cards(), shipped_parameters()
    if as_json:
        geometry = shipped_geometry()
        shown = {name: {**card, "parameters": parameters[name], "geometry": geometry[name]}
                 for name, card in cards.items()}
        click.echo(json.dumps(shown, indent=1, ensure_ascii=False, allow_nan=False))
        return
    for name, card in cards.items():
        click.echo(format_card(name, card, parameters[name]))


# ---------------------------------------------------------------------------------------------
# run: the chain


@main.command("run", context_settings=CONTEXT)
@click.argument("config", required=False, type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Output folder (default: the config's run.out, relative to the config file).")
@overwrite_option("The config changed: redo the stages that depend on the changed tables.")
@setting_option(_preprocess_classes()[1], "jobs", required_none=True, help="Preprocessing workers (default: data.jobs).")
@click.option("--template", is_flag=True, help="Print a commented config with every key and its default.")
@quiet_option("No progress bars or stage messages.")
def run_cmd(config, out_dir, overwrite, jobs, template, quiet):
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
    from training.chain import run_chain, template as config_template

    if template:
        click.echo(config_template())
        return
    if config is None:
        raise click.UsageError("give a CONFIG file (or --template to print one)")
    result = run_chain(config, out_dir=out_dir, overwrite=overwrite, jobs=jobs, progress=not quiet, log=_say(quiet))
    for st in result.stages:
        click.echo(f"{st.name:<11}{st.action:<9}{st.seconds:>8.1f} s  {st.detail}")
    for split, m in result.metrics.items():
        click.echo(f"{split}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} ({m['n_samples']} samples)")
    click.echo(f"report: {result.report}")


# ---------------------------------------------------------------------------------------------
# demo


@main.command(context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=str), default="demo-out")
@click.option("--per-class", default=60, show_default=True, type=click.IntRange(4, 10_000),
              help="Synthetic images per expression.")
@setting_option(_train_class(), "epochs", default=15, help="Training epochs.")
@setting_option(_preprocess_classes()[1], "jobs")
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
    from training.demo import run_demo

    run_demo(Path(out_dir), per_class=per_class, epochs=epochs, jobs=jobs, progress=not quiet,
             echo=click.echo, say=_say(quiet))


# ---------------------------------------------------------------------------------------------
# export-model


@main.command("export-model", context_settings=CONTEXT)
@click.argument("model", metavar="MODEL")
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.option("--format", "fmt", default="onnx", show_default=True,
              type=click.Choice(["onnx", "torchscript"]),
              help="onnx: for onnxruntime and other ONNX runtimes (needs faceblocks[onnx]); torchscript: "
                   "for torch.jit.load, in Python or C++ (libtorch).")
@click.option("--opset", default=None, type=click.IntRange(13, 23), help="ONNX opset (default 17). ONNX only.")
@overwrite_option("Replace OUT if it exists.")
@click.option("--no-check", is_flag=True,
              help="Skip the check of the written file (onnx.checker, onnxruntime or torch.jit.load "
                   "against the torch model).")
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
    from inference.export_model import export_model as export_checkpoint

    exported = export_checkpoint(model, out, fmt=fmt, opset=opset, overwrite=overwrite, check=not no_check)
    for line in exported.summary_lines():
        click.echo(line)


if __name__ == "__main__":
    main()
