"""What evaluate (and fine-tuning) refuse to mix: block geometry and the landmark model."""

from training.shard_fit import preprocessing_differences

BLOCKS = {"rotate": True, "pad": "replicate", "eyes_margin": 0.2, "mouth_margin": 0.2}


def test_shards_cut_by_another_landmark_model_differ() -> None:
    dlib = {"blocks": BLOCKS, "landmarks": "dlib"}
    net = {"blocks": BLOCKS, "landmarks": "net"}
    old = {"blocks": BLOCKS}  # written before --landmarks existed: cut by dlib
    assert preprocessing_differences(net, dlib, ["eyes", "mouth"]) == ["--landmarks 'dlib' in training, 'net' here"]
    assert preprocessing_differences(old, dlib, ["eyes", "mouth"]) == []
    assert preprocessing_differences(dlib, old, ["eyes", "mouth"]) == []
    assert preprocessing_differences(old, net, ["eyes", "mouth"]) == ["--landmarks 'net' in training, 'dlib' here"]
