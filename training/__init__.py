"""faceblocks training, evaluation and prediction.

The public API, one module per job (torch loads on first use)::

    from training.config import TrainConfig
    from training.train import train            # -> TrainResult; writes best.pt, last.pt, log.csv
    from training.evaluate import evaluate      # -> metrics dict; writes metrics.json, confusion.png
    from training.predict import predict        # -> one ImagePrediction per image or video frame

    train("out/fer2013", "runs/fer2013", TrainConfig(epochs=30))
    evaluate("runs/fer2013", "out/fer2013", split="val")
    for result in predict("fer2013", ["photo.jpg"]):      # "fer2013": the model that ships inside
        print(result.path, [(f.label, f.box) for f in result.faces])
"""
