"""faceblocks training and evaluation (prediction and model export are `inference`).

The public API, one module per job (torch loads on first use)::

    from training.config import TrainConfig
    from training.train import train            # -> TrainResult; writes best.pt, last.pt, log.csv
    from training.evaluate import evaluate      # -> metrics dict; writes metrics.json, confusion.png

    train("out/fer2013", "runs/fer2013", TrainConfig(epochs=30))
    evaluate("runs/fer2013", "out/fer2013", split="val")
"""
