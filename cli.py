"""The `faceblocks` command: a thin click layer over the `prepro`, `architectures` and `training` libraries.

Library errors become `click.ClickException` with a message a user can act on; nothing heavy is
imported until a command runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from prepro import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not HEIGHTxWIDTH, e.g. 32x96") from None
    if h < 4 or w < 4 or h > 1024 or w > 1024:
        raise click.BadParameter(f"{text!r}: each side must be between 4 and 1024 pixels")
    return h, w


def _library_errors():
    """Exception types that carry a user-actionable message (imported lazily)."""
    from prepro.pipeline import PreprocessError
    from prepro.shards import ShardError
    from training.errors import TrainingError

    return (PreprocessError, ShardError, TrainingError, ValueError, FileNotFoundError,
            NotADirectoryError, PermissionError)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="faceblocks")
def main() -> None:
    """Prior-attention facial-expression data: eye-and-eyebrow and mouth blocks cut with dlib's
    68 landmarks, stored as HDF5 shards, and a two-region attention network trained on them.

    \b
    Typical use:
      faceblocks preprocess data/fer2013 out/fer2013 --face aligned
      faceblocks inspect out/fer2013
      faceblocks verify out/fer2013
    """


# ---------------------------------------------------------------------------------------------
# preprocess / inspect / verify


@main.command(context_settings=CONTEXT)
@click.argument("source", type=click.Path(exists=True, path_type=str))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "folder", "fer2013-csv", "ferg", "jaffe", "flat"]),
              help="Layout of SOURCE; auto detects it.")
@click.option("--dataset", default=None, metavar="NAME|FILE.toml",
              help="Dataset description from datasets/ (fer2013, fer2013-csv, ferg, ckplus, jaffe) "
                   "or a TOML file: label spellings, splits, subjects, pre-cropped faces.")
@click.option("--face", "face_mode", default="auto", show_default=True,
              type=click.Choice(["auto", "detect", "aligned"]),
              help="aligned: the whole image is the face (pre-cropped data); detect: HOG detector, "
                   "largest face; auto: detect, else whole image for small/pre-cropped images.")
@click.option("--eyes-size", default="32x96", show_default=True, help="Eyes-and-eyebrows block, HxW.")
@click.option("--mouth-size", default="32x64", show_default=True, help="Mouth block, HxW.")
@click.option("--face-size", default="64x64", show_default=True, help="Aligned whole face, HxW.")
@click.option("--eyes-margin", default=0.2, show_default=True, type=click.FloatRange(0, 2),
              help="Margin around the eyes block, as a fraction of the inter-ocular distance.")
@click.option("--mouth-margin", default=0.2, show_default=True, type=click.FloatRange(0, 2),
              help="Margin around the mouth block, as a fraction of the inter-ocular distance.")
@click.option("--face-margin", default=0.1, show_default=True, type=click.FloatRange(0, 2),
              help="Margin around the face, as a fraction of the inter-ocular distance.")
@click.option("--rotate/--no-rotate", default=True, show_default=True,
              help="Rotate the face so the eyes are level.")
@click.option("--pad", default="replicate", show_default=True, type=click.Choice(["replicate", "constant"]),
              help="How a block reaching past the image border is filled.")
@click.option("--shard-size", default=1024, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Samples per HDF5 shard.")
@click.option("--max-megapixels", default=40.0, show_default=True, type=click.FloatRange(0.01, 1e4),
              help="Images whose header claims more pixels are refused without decoding.")
@click.option("--val-frac", default=0.1, show_default=True, type=click.FloatRange(0, 0.9),
              help="For sources without splits: fraction of items in val.")
@click.option("--test-frac", default=0.1, show_default=True, type=click.FloatRange(0, 0.9),
              help="For sources without splits: fraction of items in test.")
@click.option("--split-seed", default=0, show_default=True, type=int, help="Seed of that split.")
@click.option("--split-by-subject", is_flag=True,
              help="Keep every subject in a single split (CK+, JAFFE, FERG characters).")
@click.option("--limit", default=None, type=click.IntRange(1), help="Process only the first N items.")
@click.option("-j", "--jobs", default=-1, show_default=True, type=int,
              help="Worker processes; -1 = all cores.")
@click.option("--backend", default=None,
              help="joblib backend (loky, multiprocessing, threading, or dask with --scheduler).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Dask scheduler address (tcp://host:8786) for --backend dask.")
@click.option("--chunk-size", default=64, show_default=True, type=click.IntRange(1, 100_000),
              help="Images sent to a worker at a time.")
@click.option("--predictor", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="dlib 68-point predictor .dat file (default: the one in face_recognition_models).")
@click.option("--overwrite", is_flag=True, help="Replace a run with other settings in OUT_DIR.")
@click.option("--strict", is_flag=True, help="Exit non-zero when any input could not be used.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def preprocess(source, out_dir, fmt, dataset, face_mode, eyes_size, mouth_size, face_size,
               eyes_margin, mouth_margin, face_margin, rotate, pad, shard_size, max_megapixels,
               val_frac, test_frac, split_seed, split_by_subject, limit, jobs, backend, scheduler,
               chunk_size, predictor, overwrite, strict, quiet):
    """Cut eye-and-eyebrow and mouth blocks from SOURCE into HDF5 shards in OUT_DIR.

    SOURCE is a folder of class folders (also Kaggle's FER2013 train/ and test/), the FER2013
    CSV (.csv or .csv.gz), a FERG-DB tree, a JAFFE folder, or a flat folder of unlabelled images.
    Running the same command again resumes an interrupted run. Unreadable inputs are listed,
    not fatal (see `faceblocks inspect`).

    \b
    Examples:
      faceblocks preprocess fer2013/ out/fer2013 --dataset fer2013 --face aligned
      faceblocks preprocess fer2013.csv.gz out/fer2013-csv
      faceblocks preprocess jaffe/ out/jaffe --dataset jaffe --split-by-subject -j 2
      faceblocks preprocess photos/ out/photos --face detect --eyes-size 48x144
    """
    from prepro.blocks import BlockConfig
    from prepro.pipeline import PreprocessConfig, run_preprocess

    if backend == "dask" or scheduler:
        _start_dask(scheduler)
        backend = "dask"
    try:
        cfg = PreprocessConfig(
            fmt=fmt, dataset=dataset, face_mode=face_mode,
            blocks=BlockConfig(eyes_size=_size(eyes_size), mouth_size=_size(mouth_size),
                               face_size=_size(face_size), eyes_margin=eyes_margin,
                               mouth_margin=mouth_margin, face_margin=face_margin, rotate=rotate,
                               pad=pad),
            shard_size=shard_size, max_pixels=int(max_megapixels * 1e6), val_frac=val_frac,
            test_frac=test_frac, split_seed=split_seed, split_by_subject=split_by_subject, limit=limit)
        log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
        summary = run_preprocess(source, out_dir, cfg, jobs=jobs, backend=backend,
                                 chunk_size=chunk_size, predictor=predictor, overwrite=overwrite,
                                 progress=not quiet, log=log)
    except KeyboardInterrupt:
        raise click.ClickException(
            "interrupted: finished shards are kept; run the same command again to resume") from None
    except _library_errors() as e:
        raise click.ClickException(str(e)) from None
    rate = summary.written_now / summary.seconds if summary.seconds > 0 else 0.0
    click.echo(f"{summary.samples} samples in {out_dir}; {summary.failed} of {summary.items} inputs "
               f"could not be used; {summary.written_now} written now in {summary.seconds:.1f} s "
               f"({rate:.0f} images/s)")
    for reason, count in list(summary.failure_reasons.items())[:8]:
        click.echo(f"  {count:>7}  {reason}")
    if summary.failed:
        click.echo(f"every failure is listed by `faceblocks inspect {out_dir}`")
    if strict and summary.failed:
        sys.exit(1)


_DASK_CLIENT = None


def _start_dask(address: str | None) -> None:
    try:
        from distributed import Client
    except ImportError:
        raise click.ClickException("--backend dask needs the `distributed` package: "
                                   "pip install 'dask[distributed]'") from None
    if not address:
        raise click.ClickException("--backend dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
    global _DASK_CLIENT
    # The client registers itself as the default one that joblib's dask backend uses; keeping a
    # reference keeps it connected for the whole run.
    _DASK_CLIENT = Client(address)


@main.command(context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--failures", "n_fail", default=20, show_default=True, type=click.IntRange(0),
              help="How many failures to list in the text output (all in --json).")
def inspect(out_dir, as_json, n_fail):
    """Counts per split and label, face-box methods, quality and failures of a shard folder.

    \b
    Examples:
      faceblocks inspect out/fer2013
      faceblocks inspect out/fer2013 --json | jq .splits
    """
    from prepro.shards import summarize

    try:
        s = summarize(out_dir)
    except _library_errors() as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(s, indent=1, ensure_ascii=False))
        return
    click.echo(f"{s['out_dir']}: {s['samples']} samples in {s['shards']} shards, {s['failed']} of "
               f"{s['items']} inputs failed" + ("" if s["complete"] else " (INCOMPLETE: rerun preprocess to finish)"))
    src = s["source"]
    click.echo(f"source: {src.get('path')} (format {src.get('format')}, dataset {src.get('dataset')})")
    labels = sorted({lab for per in s["splits"].values() for lab in per})
    if labels:
        header = f"{'split':<8}" + "".join(f"{lab:>10}" for lab in labels) + f"{'total':>10}"
        click.echo(header)
        for split, per in s["splits"].items():
            click.echo(f"{split:<8}" + "".join(f"{per.get(lab, 0):>10}" for lab in labels)
                       + f"{sum(per.values()):>10}")
    if s["box_methods"]:
        click.echo("face boxes: " + ", ".join(f"{k} {v}" for k, v in s["box_methods"].items()))
    q = s["quality"]
    if q:
        click.echo(f"quality: min {q['min']:.2f}, 5% {q['p05']:.2f}, median {q['median']:.2f}, "
                   f"mean {q['mean']:.2f}, below 0.5: {q['below_0.5']}")
    if s["failures"]:
        click.echo(f"failures ({s['failed']}):")
        for f in s["failures"][:n_fail]:
            click.echo(f"  {f['source']}: {f['reason']}")
        if s["failed"] > n_fail:
            click.echo(f"  ... {s['failed'] - n_fail} more (--failures N, or --json for all)")


@main.command(context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
def verify(out_dir):
    """Check every shard of OUT_DIR against the manifest's checksums; exit 1 if any is damaged.

    \b
    Example:
      faceblocks verify out/fer2013 && echo whole
    """
    from prepro.shards import verify as verify_dir

    try:
        report = verify_dir(out_dir)
    except _library_errors() as e:
        raise click.ClickException(str(e)) from None
    for p in report.problems:
        click.echo(f"DAMAGED {p}", err=True)
    if not report.complete:
        click.echo(f"INCOMPLETE: the run in {out_dir} has not finished; rerun the same preprocess "
                   "command to resume", err=True)
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
@click.option("--box-method", "box_methods", multiple=True,
              type=click.Choice(["detector", "whole_image", "whole_image_fallback"]),
              help="Keep samples whose face box was found this way (repeatable; default all).")
@click.option("--min-quality", default=None, type=click.FloatRange(0, 1),
              help="Keep samples whose landmark quality is at least this.")
@click.option("--overwrite", is_flag=True, help="Replace the files this export writes in a non-empty OUT.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def export(shards_dir, out, fmt, regions, splits, labels, box_methods, min_quality, overwrite, quiet):
    """Export the blocks of SHARDS_DIR to OUT for other projects, with filters.

    png trees read as they are with torchvision's ImageFolder(OUT/eyes/train) or Keras'
    image_dataset_from_directory; npz archives load with np.load(allow_pickle=False); blocks.h5
    is read like a shard. File names are made from checked ids, never raw from the data.

    \b
    Examples:
      faceblocks export out/fer2013 export/fer-png
      faceblocks export out/fer2013 export/fer-npz --format npz --regions eyes,mouth,landmarks
      faceblocks export out/jaffe export/jaffe-h5 --format hdf5 --min-quality 0.5
      faceblocks export out/fer2013 export/happy-sad --split train,val --label happy --label sad
    """
    from prepro.export import export_blocks

    try:
        summary = export_blocks(shards_dir, out, fmt=fmt, regions=regions, splits=_names(splits),
                                labels=_names(labels), box_methods=list(box_methods) or None,
                                min_quality=min_quality, overwrite=overwrite, progress=not quiet)
    except _library_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{summary.samples} samples exported to {out} as {fmt} ({', '.join(summary.regions)}); "
               f"{len(summary.files)} file{'s' if len(summary.files) != 1 else ''} written" +
               (f", {len(summary.removed)} left by the previous export removed" if summary.removed else ""))
    for split, per in summary.counts.items():
        click.echo(f"  {split:<6} " + ", ".join(f"{lab} {n}" for lab, n in per.items()))


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, metavar="SHARDS_DIR|INPUT...")
@click.option("--out", "out_png", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="The PNG to write (default: SHARDS_DIR/preview.png, or preview.png for raw images).")
@click.option("--split", default=None, help="Shards only: only this split (train, val, test).")
@click.option("--label", "labels", multiple=True, metavar="NAME[,NAME]",
              help="Shards only: only these labels (repeatable or a comma list).")
@click.option("--count", default=24, show_default=True, type=click.IntRange(1, 400),
              help="Samples on the sheet (5 per row).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random choice.")
@click.option("--worst", default=None, type=click.IntRange(1, 400), metavar="N",
              help="Show the N lowest-quality samples instead (to find landmark failures).")
@click.option("--face", "face_mode", default="auto", show_default=True,
              type=click.Choice(["auto", "detect", "aligned"]),
              help="Raw images only: how the face is found, as in `preprocess`.")
@click.option("--eyes-size", default="32x96", show_default=True, help="Raw images only: eyes block, HxW.")
@click.option("--mouth-size", default="32x64", show_default=True, help="Raw images only: mouth block, HxW.")
@click.option("--face-size", default="64x64", show_default=True, help="Raw images only: whole face, HxW.")
def preview(inputs, out_png, split, labels, count, seed, worst, face_mode, eyes_size, mouth_size, face_size):
    """A contact sheet PNG: aligned faces with landmarks and block boxes, beside the blocks.

    Give a shard folder (made by `preprocess`) to see what was stored, or raw images, folders or
    glob patterns to see what `preprocess` would cut from them before running it. Green dots
    are the 68 landmarks, the blue and red outlines the eyes and mouth blocks; each tile gives
    the label (or file name), the landmark quality and how the face box was found. A raw image
    without a usable face gets a tile that says why.

    \b
    Examples:
      faceblocks preview out/fer2013
      faceblocks preview out/fer2013 --split test --label happy,sad --count 10 --out happy-sad.png
      faceblocks preview out/fer2013 --worst 24 --out worst.png
      faceblocks preview photos/ --face detect --out photos-preview.png
      faceblocks preview 'raw/**/*.jpg' --worst 10
    """
    from prepro.preview import contact_sheet, contact_sheet_images

    shards = len(inputs) == 1 and (Path(inputs[0]) / "manifest.json").is_file()
    try:
        if shards:
            path = contact_sheet(inputs[0], out_png, split=split, labels=_names(labels),
                                 count=worst or count, seed=seed, worst=worst is not None)
            click.echo(str(path))
            return
        ctx = click.get_current_context()
        ignored = [flag for flag, name in (("--split", "split"), ("--label", "labels"))
                   if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if ignored:
            raise click.UsageError(f"{' and '.join(ignored)} only apply to a shard folder; "
                                   f"{inputs[0]} is not one (it has no manifest.json)")
        from prepro.blocks import BlockConfig

        blocks = BlockConfig(eyes_size=_size(eyes_size), mouth_size=_size(mouth_size), face_size=_size(face_size))
        sheet = contact_sheet_images(inputs, out_png or "preview.png", face_mode=face_mode, blocks=blocks,
                                     count=worst or count, seed=seed, worst=worst is not None)
    except _library_errors() as e:
        raise click.ClickException(str(e)) from None
    for path, reason in sheet.failures:
        click.echo(f"{path}: {reason}")
    click.echo(f"{sheet.path} ({sheet.shown} of {sheet.images} images, {len(sheet.failures)} without blocks)")


# ---------------------------------------------------------------------------------------------
# train / evaluate


def _models() -> list[str]:
    # The registry lives with torch; list the names without importing it for every `-h`.
    return ["two-branch", "two-branch-face", "two-branch-concat", "face-cnn"]


@main.command(context_settings=CONTEXT)
@click.argument("shards_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--model", default="two-branch", show_default=True, type=click.Choice(_models()),
              help="Network: two-branch (eyes + mouth, learned region attention), two-branch-face "
                   "(+ whole-face context), two-branch-concat (original design), face-cnn (baseline).")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=2e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Peak AdamW learning rate (linear warm-up, then cosine).")
@click.option("--weight-decay", default=0.05, show_default=True, type=click.FloatRange(0))
@click.option("--label-smoothing", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--labels", default=None, metavar="A,B,...",
              help="Classes to keep, e.g. angry,disgust,fear,happy,sad,surprise,neutral (default: "
                   "those present in the train split).")
@click.option("--class-weighting", default="none", show_default=True,
              type=click.Choice(["none", "inverse", "sqrt"]), help="Loss weights for rare classes.")
@click.option("--balanced-sampler", is_flag=True, help="Sample classes evenly instead of weighting.")
@click.option("--no-augment", is_flag=True, help="Turn augmentation off.")
@click.option("--no-cache", is_flag=True, help="Read HDF5 lazily instead of loading splits into memory.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0), help="DataLoader workers.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--patience", default=0, show_default=True, type=click.IntRange(0),
              help="Early stopping after N epochs without a better val macro-F1 (0 = off).")
@click.option("--max-minutes", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Stop after this much training time (0 = no limit).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
@click.option("--resume", is_flag=True, help="Continue the stopped run in RUN_DIR with its stored settings.")
@click.option("--overwrite", is_flag=True, help="Replace a finished or stopped run in RUN_DIR.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train(shards_dir, run_dir, model, epochs, batch_size, lr, weight_decay, label_smoothing, labels,
          class_weighting, balanced_sampler, no_augment, no_cache, workers, seed, patience,
          max_minutes, device, resume, overwrite, quiet):
    """Train a network on the train split of SHARDS_DIR, selecting the best epoch on val.

    Writes log.csv, curves.png, best.pt (by val macro-F1) and last.pt to RUN_DIR. For several
    GPUs or machines, run `torchrun --nproc_per_node N -m training.engine SHARDS_DIR RUN_DIR`.

    \b
    Examples:
      faceblocks train out/fer2013 runs/two-branch --epochs 30
      faceblocks train out/fer2013 runs/quick --max-minutes 30 --class-weighting sqrt
      faceblocks train out/fer2013 runs/two-branch --resume
    """
    from training import TrainConfig
    from training import train as train_run

    ctx = click.get_current_context()
    given = {name for name in ctx.params
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    try:
        if resume:
            # The run's stored settings are used; only the run-control options given may change.
            control = {"epochs": epochs, "max_minutes": max_minutes, "patience": patience,
                       "device": device, "workers": workers, "quiet": quiet}
            other = given - set(control) - {"resume", "shards_dir", "run_dir"}
            if other:
                raise click.UsageError(f"--resume uses the run's stored settings; it cannot change "
                                       f"{', '.join('--' + o.replace('_', '-') for o in sorted(other))}")
            cfg = None
            if given & set(control):
                cfg = _stored_config(run_dir)
                fields = {"epochs": "epochs", "max_minutes": "max_minutes", "patience": "patience",
                          "device": "device", "workers": "num_workers"}
                for option in given & set(fields):
                    setattr(cfg, fields[option], control[option])
                if "quiet" in given:
                    cfg.progress = not quiet
        else:
            cfg = TrainConfig(
                model=model, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                label_smoothing=label_smoothing,
                labels=[x.strip() for x in labels.split(",")] if labels else None,
                class_weighting=class_weighting, balanced_sampler=balanced_sampler,
                augment=not no_augment, cache=not no_cache, num_workers=workers, seed=seed,
                patience=patience, max_minutes=max_minutes, device=device, progress=not quiet)
        result = train_run(shards_dir, run_dir, cfg, resume=resume, overwrite=overwrite,
                           log=lambda msg: click.echo(msg, err=True))
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted: continue with `faceblocks train {shards_dir} "
                                   f"{run_dir} --resume`") from None
    except _library_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"best val macro-F1 {result.best_val_macro_f1:.4f} at epoch {result.best_epoch} "
               f"({result.epochs_done} epochs, {result.stop_reason}); checkpoints in {run_dir}")
    click.echo(f"next: faceblocks evaluate {run_dir} {shards_dir} --split test")


def _stored_config(run_dir: str):
    from training import TrainConfig
    from training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(Path(run_dir) / "last.pt", for_resume=True)
    return TrainConfig.from_dict(ckpt["config"])


@main.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True, path_type=str), metavar="RUN_DIR_OR_CHECKPOINT")
@click.argument("shards_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--tta-flip", is_flag=True, help="Average the predictions of each face and its mirror image.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Where metrics.json and the confusion matrix go (default: the run folder).")
@click.option("--device", default="auto", show_default=True)
@click.option("--allow-mismatch", is_flag=True,
              help="Evaluate even if the shards' blocks were cut with other margins, rotation or padding.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate(checkpoint, shards_dir, split, tta_flip, out_dir, device, allow_mismatch, as_json):
    """Accuracy, macro-F1, per-class scores, confusion matrix and region attention on a split.

    SHARDS_DIR may come from another dataset (train on FER2013, test on CK+ or JAFFE): the labels
    both share are evaluated, the others counted and left out.

    \b
    Examples:
      faceblocks evaluate runs/two-branch out/fer2013 --split val
      faceblocks evaluate runs/two-branch/best.pt out/jaffe --split test --tta-flip
    """
    from training import evaluate as evaluate_run
    from training import format_metrics_table

    try:
        metrics = evaluate_run(checkpoint, shards_dir, split=split, tta_flip=tta_flip, out_dir=out_dir,
                               device=device, allow_preprocessing_mismatch=allow_mismatch)
    except _library_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(metrics, indent=1) if as_json else format_metrics_table(metrics))


@main.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True, path_type=str), metavar="RUN_DIR_OR_CHECKPOINT")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image, one per line.")
@click.option("--annotate", "annotate_dir", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Write each image with face box, landmarks, blocks and label drawn on it here.")
@click.option("--face", "face_mode", default=None, type=click.Choice(["auto", "detect", "aligned"]),
              help="Override the face mode the checkpoint was trained with (e.g. detect for group photos).")
@click.option("--device", default="auto", show_default=True)
@click.option("--predictor", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="dlib 68-point predictor .dat file (default: the one in face_recognition_models).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def predict(checkpoint, inputs, as_json, annotate_dir, face_mode, device, predictor, quiet):
    """Classify every face in images, folders or glob patterns (INPUT...).

    The face and block preprocessing is the one the checkpoint was trained with. For each face:
    the label, the class probabilities and the region attention weights. An image that cannot be
    read or holds no face is reported and skipped.

    \b
    Examples:
      faceblocks predict runs/fer2013 photo.jpg
      faceblocks predict runs/fer2013/best.pt 'photos/**/*.jpg' --json > predictions.jsonl
      faceblocks predict runs/fer2013 group.jpg --face detect --annotate annotated/
    """
    from training.predict import predict as predict_run

    try:
        results = predict_run(checkpoint, inputs, annotate_dir=annotate_dir, device=device,
                              face_mode=face_mode, predictor_path=predictor,
                              progress=not quiet and not as_json)
    except _library_errors() as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        for r in results:
            click.echo(json.dumps(r.to_dict(), ensure_ascii=False))
        return
    for r in results:
        if r.error:
            click.echo(f"{r.path}: {r.error}")
        for k, f in enumerate(r.faces):
            top = sorted(f.probabilities.items(), key=lambda kv: -kv[1])[:3]
            click.echo(f"{r.path} [face {k + 1}, {f.box_method}, quality {f.quality:.2f}]: {f.label}  ("
                       + ", ".join(f"{c} {p:.2f}" for c, p in top) + ")  regions "
                       + ", ".join(f"{n} {w:.2f}" for n, w in f.region_weights.items()))
    n_faces = sum(len(r.faces) for r in results)
    n_bad = sum(1 for r in results if r.error)
    click.echo(f"{len(results)} images, {n_faces} faces, {n_bad} without a prediction"
               + (f"; annotated copies in {annotate_dir}" if annotate_dir else ""))


# ---------------------------------------------------------------------------------------------
# run: the chain


@main.command("run", context_settings=CONTEXT)
@click.argument("config", required=False, type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Output folder (default: the config's run.out, relative to the config file).")
@click.option("--overwrite", is_flag=True,
              help="The config changed: redo the stages that depend on the changed tables.")
@click.option("-j", "--jobs", default=None, type=int, help="Preprocessing workers (default: data.jobs).")
@click.option("--template", is_flag=True, help="Print a commented config with every key and its default.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or stage messages.")
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
      out = "runs/fer2013"
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
    say = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    try:
        result = run_chain(config, out_dir=out_dir, overwrite=overwrite, jobs=jobs, progress=not quiet, log=say)
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted: run `faceblocks run {config}` again to continue") from None
    except _library_errors() as e:
        raise click.ClickException(str(e)) from None
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
@click.option("--epochs", default=15, show_default=True, type=click.IntRange(1), help="Training epochs.")
@click.option("-j", "--jobs", default=-1, show_default=True, type=int, help="Worker processes; -1 = all cores.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def demo(out_dir, per_class, epochs, jobs, quiet):
    """The first run, no download needed: sample, preprocess, train, evaluate, preview.

    Builds a small synthetic labelled sample (scikit-image's public-domain astronaut photograph,
    warped per expression, with varied pose, scale, lighting and noise) in OUT_DIR/sample,
    preprocesses it into OUT_DIR/shards with the default detector-based face mode, trains the
    two-branch network in OUT_DIR/run, evaluates it on the held-out test split, and draws a
    contact sheet. Each finished stage is kept: running it again continues. The sample is one
    synthetic identity, for trying the tool only.

    \b
    Example:
      faceblocks demo demo-out
    """
    from prepro.pipeline import PreprocessConfig, run_preprocess
    from prepro.preview import contact_sheet
    from prepro.synthetic import make_sample
    from training import TrainConfig, evaluate as evaluate_run, format_metrics_table, train as train_run

    out = Path(out_dir)
    sample, shards, run = out / "sample", out / "shards", out / "run"
    say = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    try:
        done = out / "sample.done"  # written last, so a half-built sample is rebuilt
        if not done.is_file():
            say(f"[1/5] building the synthetic sample in {sample} ...")
            counts = make_sample(sample, per_class=per_class)
            done.write_text(json.dumps(counts) + "\n")
        say(f"[2/5] preprocessing into {shards} ...")
        summary = run_preprocess(str(sample), str(shards), PreprocessConfig(), jobs=jobs,
                                 progress=not quiet, log=say)
        click.echo(f"preprocess: {summary.samples} samples, {summary.failed} failed")
        say(f"[3/5] training two-branch in {run} ...")
        cfg = TrainConfig(model="two-branch", epochs=epochs, batch_size=32, lr=3e-3, warmup_epochs=1,
                          progress=not quiet)
        if (run / "best.pt").is_file() and not (run / "last.pt").is_file():
            raise click.ClickException(f"{run} is damaged: delete it and run the demo again")
        if (run / "last.pt").is_file():
            result = train_run(str(shards), str(run), None, resume=True, log=say)
        else:
            result = train_run(str(shards), str(run), cfg, log=say)
        click.echo(f"train: best val macro-F1 {result.best_val_macro_f1:.3f} at epoch {result.best_epoch}")
        say("[4/5] evaluating on the test split ...")
        metrics = evaluate_run(str(run), str(shards), split="test")
        click.echo(format_metrics_table(metrics))
        say("[5/5] drawing the contact sheet ...")
        sheet = contact_sheet(shards, out / "preview.png", count=20)
    except _library_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo("")
    click.echo(f"pictures: {sheet}  {run / 'confusion.png'}  {run / 'curves.png'}")
    click.echo("on real FER2013 (Kaggle folder layout):")
    click.echo("  faceblocks preprocess path/to/fer2013 out/fer2013 --dataset fer2013")
    click.echo("  faceblocks train out/fer2013 runs/fer2013 && faceblocks evaluate runs/fer2013 out/fer2013 --split val")
    click.echo("or all stages from one config: faceblocks run --template > fer2013.toml (set data.source), "
               "then faceblocks run fer2013.toml")


if __name__ == "__main__":
    main()
