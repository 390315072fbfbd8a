"""README's own example commands, walked in order on small synthetic data in a scratch folder: every
`faceblocks` line of its bash blocks runs (with fewer epochs) or is skipped for a stated reason;
a new README command that is neither fails here until it is walked."""

from __future__ import annotations

import gzip
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import main
from training.zoo import shipped_names

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Commands that need a real dataset or hours; everything else runs.
SKIP = {
    "preprocess RAF-DB/": "needs RAF-DB's own layout (basic/EmoLabel/...)",
    "preprocess AffectNet/": "needs AffectNet's CSV lists",
    "run benchmarks/fer2013-full.toml": "real FER2013, 50 minutes of training",
    "run benchmarks/fer2013-30min.toml": "real FER2013, 30 minutes of training",
    "train out/ckplus runs/ckplus-ft --init fer2013": "needs CK+ shards (tests/test_finetune.py fine-tunes fake ones)",
    "predict fer2013 --camera 0": "needs a camera (tests/test_live.py runs it with a video standing in)",
}
# Changes that keep a command's meaning on small data.
FEWER_EPOCHS = {"--epochs": "1"}


def readme_commands() -> list[list[str]]:
    """The `faceblocks ...` lines of README's bash blocks, split as a shell would (comments off)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            if line.startswith("faceblocks "):
                commands.append(shlex.split(line, comments=True)[1:])
    return commands


def _skip_reason(args: list[str]) -> str | None:
    text = " ".join(args)
    return next((why for start, why in SKIP.items() if text.startswith(start)), None)


def _crops(root: Path) -> dict[str, list[np.ndarray]]:
    from prepro.synthetic import make_sample

    make_sample(root / "sample", per_class=8, size=96)
    return {n: [np.asarray(Image.open(p).convert("L").resize((48, 48)))
                for p in sorted((root / "sample" / n).glob("*.png"))] for n in NAMES}


def _world(root: Path) -> None:
    """The files README's commands name, made small: FER2013 both ways, a label file, JAFFE, photos, a clip."""
    import cv2
    from skimage import data

    crops = _crops(root)
    lines = ["emotion,pixels,Usage"]
    for c, name in enumerate(NAMES):
        for k, a in enumerate(crops[name]):
            split, prefix = ("train", "Training") if k < 6 else ("test", "PublicTest")
            folder = root / "path/to/fer2013" / split / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(folder / f"{prefix}_{k}.jpg")
            lines.append(f"{c},{' '.join(map(str, a.ravel()))},{prefix}")
    (root / "fer2013.csv.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")
    ferplus = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
    columns = header.split(",")[2:]
    votes = [header] + [f"{line.rsplit(',', 1)[1]},fer{k}.png," + ",".join(
        "10" if c == ferplus[int(line.split(",", 1)[0])] else "0" for c in columns) for k, line in enumerate(lines[1:])]
    (root / "fer2013new.csv").write_text("\n".join(votes) + "\n")
    (root / "FERPlus").mkdir()
    (root / "FERPlus" / "fer2013new.csv").write_text("\n".join(votes) + "\n")
    (root / "img").mkdir()
    (root / "images").mkdir()
    (root / "jaffe").mkdir()
    (root / "lists").mkdir()
    rows, apart = ["path,label"], ["path,label"]
    for name in NAMES:
        for k, a in enumerate(crops[name][:4]):
            Image.fromarray(a).save(root / "img" / f"{name}{k}.png")
            Image.fromarray(a).save(root / "images" / f"{name}{k}.png")
            rows.append(f"img/{name}{k}.png,{name}")
            apart.append(f"{root / 'images' / f'{name}{k}.png'},{name}")
            code = {"angry": "AN", "disgust": "DI", "fear": "FE", "happy": "HA", "sad": "SA", "surprise": "SU",
                    "neutral": "NE"}[name]
            Image.fromarray(a).save(root / "jaffe" / f"{('KA', 'KL', 'KM', 'KR')[k]}.{code}1.{k + 1}.tiff")
    (root / "my_labels.csv").write_text("\n".join(rows) + "\n")
    (root / "lists" / "train.csv").write_text("\n".join(apart) + "\n")
    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    for path in ("photo.jpg", "group.jpg", "photos/astronaut.jpg", "my_photos/astronaut.jpg"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / path), photo)
    small = cv2.resize(photo, (256, 256))
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (256, 256))
    for _ in range(6):
        writer.write(small)
    writer.release()


def _adapted(args: list[str], root: Path) -> tuple[list[str], str | None]:
    """(arguments, file stdout goes to) for the small world: fewer epochs, the world's image root,
    a resume that has epochs left to run, a shell redirection kept apart."""
    out = None
    if ">" in args:
        k = args.index(">")
        args, out = args[:k], args[k + 1]
    args = [a.replace("/data/images", str(root / "images")) for a in args]
    for flag, value in FEWER_EPOCHS.items():
        if flag in args:
            args[args.index(flag) + 1] = value
    if args[0] == "train" and "--resume" in args:
        args += ["--epochs", "2"]  # the one-epoch run finished: the resume runs one more
    return args, out


@pytest.mark.slow
@pytest.mark.skipif("fer2013" not in shipped_names(), reason="README's commands use the shipped model")
def test_readme_commands_run_on_small_data(tmp_path, monkeypatch):
    commands = readme_commands()
    assert len(commands) > 25  # the blocks were found
    _world(tmp_path)
    monkeypatch.chdir(tmp_path)
    runner, ran, skipped = CliRunner(), [], []
    for raw in commands:
        why = _skip_reason(raw)
        if why:
            skipped.append((raw, why))
            continue
        args, out = _adapted(raw, tmp_path)
        if args == ["run", "fer2013.toml"]:
            toml = (tmp_path / "fer2013.toml").read_text()
            (tmp_path / "fer2013.toml").write_text(re.sub(r"(?m)^epochs = \d+", "epochs = 1", toml))
        r = runner.invoke(main, args)
        assert r.exit_code == 0, f"faceblocks {' '.join(raw)}:\n{r.output}"
        if out:
            (tmp_path / out).write_text(r.stdout)
        ran.append(raw)
    assert len(skipped) == len(SKIP) and len(ran) == len(commands) - len(SKIP)
    # What the commands say they write is there.
    for made in ("annotated", "predictions.jsonl", "clip.csv", "clip-labelled.mp4", "out/fer2013/preview-train.png",
                 "out/fer2013/preview-worst.png", "runs/fer2013/best.pt", "out/jaffe-eval-fer2013-all/metrics.json",
                 "blocks/classes.txt", "fer2013.onnx", "runs/fer2013-all/report.md"):
        assert (tmp_path / made).exists(), made
