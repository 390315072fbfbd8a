"""faceblocks inference: a trained model on new images and videos, and its export.

One module per job (torch, OpenCV and dlib load on first use)::

    predictions.py   PredictOptions, ImagePrediction, FacePrediction
    classifier.py    Classifier: a checkpoint ready to classify blocks
    frames.py        the inputs: image files, arrays, sampled video frames
    predict.py       predict: faces found in parallel, classified in batches
    drawing.py       a prediction drawn on its picture
    annotate.py      annotated copies written (--annotate)
    tables.py        the CSV of predictions (--csv)
    export_model.py  a checkpoint exported as ONNX or TorchScript
    demo.py          `faceblocks demo`: the shipped model on a photo, then a small run end to end

    from inference.predict import predict
    for result in predict("fer2013", ["photo.jpg"]):      # "fer2013": the model that ships inside
        print(result.path, [(f.label, f.box) for f in result.faces])
"""
