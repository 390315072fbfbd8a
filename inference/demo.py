"""`faceblocks demo`: the first run, with nothing to download.

0. the shipped FER2013 model on a real photograph (scikit-image's public-domain astronaut
   portrait): the label and an annotated copy, before any training;
1. a small synthetic labelled sample (`prepro.synthetic`), 2. preprocessed, 3. a two-branch
   network trained on it, 4. evaluated on its test split, 5. a contact sheet.

Each finished stage is kept: running it again continues.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from prepro.config import PreprocessConfig, PreprocessRun
from prepro.errors import OutputError
from prepro.outputs import is_empty_but_for_us
from training.config import TrainConfig
from training.run_folder import RunFolder
from training.run_records import best_text
from training.zoo import shipped_names


def photo_prediction(out: Path, echo: Callable[[str], None]) -> None:
    """The shipped model on the astronaut photograph: printed, and drawn into out/photo-annotated/."""
    import cv2
    from skimage import data

    # imported here: keeps faceblocks -h fast (numpy)
    from inference.predict import PredictOptions, predict

    if "fer2013" not in shipped_names():
        echo("no shipped model in this install: skipping the photo")
        return
    photo = out / "photo.png"
    if not photo.is_file():
        cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    for r in predict("fer2013", [str(photo)], PredictOptions(annotate=str(out / "photo-annotated"))):
        for f in r.faces:
            top = sorted(f.probabilities.items(), key=lambda kv: -kv[1])[:3]
            echo(f"shipped model on {photo}: {f.label} (" + ", ".join(f"{c} {p:.2f}" for c, p in top) + ")  regions "
                 + ", ".join(f"{n} {w:.2f}" for n, w in f.region_weights.items()) + f"  -> {r.annotated}")
        if r.error:
            echo(f"{photo}: {r.error}")


MARKER = ".faceblocks-demo"  # written first into a demo folder: only such a folder is reused


def claim_demo_folder(out: Path) -> None:
    """Make ``out`` the demo's folder: new, empty, or an earlier demo's (it carries MARKER). Any
    other folder is refused, so the demo never takes or replaces a file of the user's."""
    marker = out / MARKER
    if out.exists() and not marker.is_file() and not (out.is_dir() and is_empty_but_for_us(out)):
        raise OutputError(f"{out} is not empty and not an earlier demo's folder: the demo writes only into "
                          "a new or empty folder (or its own); give another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not marker.is_file():
            marker.write_text("made by faceblocks demo\n")
    except OSError as e:
        raise OutputError(f"cannot create {out} ({e.strerror or e})") from None


def run_demo(out: Path, per_class: int = 60, epochs: int = 15, jobs: int = -1, progress: bool = True,
             echo: Callable[[str], None] = print, say: Callable[[str], None] = print) -> None:
    # imported here: keeps faceblocks -h fast (numpy, torch)
    from prepro.pipeline import run_preprocess
    from prepro.preview import contact_sheet
    from prepro.synthetic import make_sample
    from training.evaluate import evaluate, format_metrics_table
    from training.train import train

    claim_demo_folder(out)
    say("[0/5] the shipped model on a photograph ...")
    photo_prediction(out, echo)
    sample, shards, run = out / "sample", out / "shards", out / "run"
    done = out / "sample.done"  # written last, so a half-built sample is rebuilt
    if not done.is_file():
        say(f"[1/5] building the synthetic sample in {sample} ...")
        counts = make_sample(sample, per_class=per_class)
        done.write_text(json.dumps(counts) + "\n")
    say(f"[2/5] preprocessing into {shards} ...")
    # At least one val and one test face per expression, however small the sample (--per-class 4).
    frac = max(0.1, 1.0 / per_class)
    summary = run_preprocess(str(sample), str(shards), PreprocessConfig(val_frac=frac, test_frac=frac),
                             PreprocessRun(jobs=jobs),
                             progress=progress, log=say)
    echo(f"preprocess: {summary.samples} samples, {summary.failed} failed"
         + (" (the sample's strongest poses and lighting defeat the HOG detector: listed by `faceblocks inspect "
            f"{shards}`, as any photo without a found face would be)" if summary.failed else ""))
    say(f"[3/5] training two-branch in {run} ...")
    cfg = TrainConfig(model="two-branch", epochs=epochs, batch_size=32, lr=3e-3, warmup_epochs=1, progress=progress)
    folder = RunFolder(run)
    if folder.can_resume():
        result = train(str(shards), str(run), None, resume=True, log=say)
    else:
        result = train(str(shards), str(run), cfg, overwrite=folder.holds_run(), log=say)
    echo(f"train: {best_text(result.best_val_macro_f1, result.best_epoch, digits=3)}")
    say("[4/5] evaluating on the test split ...")
    echo(format_metrics_table(evaluate(str(run), str(shards), split="test")))
    echo("(one synthetic identity: the region weights say which block sufficed to tell its warps apart, often "
         "one alone; they say nothing about real faces, where the shipped model weighs both)")
    say("[5/5] drawing the contact sheet ...")
    sheet = contact_sheet(shards, out / "preview.png", count=20)
    echo("")
    echo(f"pictures: {sheet}  {run / 'confusion.png'}  {run / 'curves.png'}")
    echo("on real FER2013 (Kaggle folder layout):")
    echo("  faceblocks preprocess path/to/fer2013 out/fer2013 --dataset fer2013 --face aligned")
    echo("  faceblocks train out/fer2013 runs/fer2013 && faceblocks evaluate runs/fer2013 out/fer2013 --split val")
    echo("or all stages from one config: faceblocks run --template > fer2013.toml (set data.source), "
         "then faceblocks run fer2013.toml")
