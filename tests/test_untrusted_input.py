"""Values a user or someone else's model can get wrong, and what they must not do."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from galaxytune.config import load_config
from galaxytune.data.images import iter_decoded
from galaxytune.errors import ConfigError
from galaxytune.inference.predict import Predictions
from galaxytune.report import plots


@pytest.mark.parametrize("override, message", [
    ("finetune.lr=-1", "finetune.lr=-1.0 must be above 0"),
    ("transfer.lr=0", "transfer.lr=0.0 must be above 0"),
    ("finetune.label_smoothing=2", "finetune.label_smoothing=2.0 must be between"),
    ("model.drop_rate=1.5", "model.drop_rate=1.5 must be between"),
    ("finetune.weight_decay=-0.1", "finetune.weight_decay=-0.1 must be between"),
    ("finetune.layer_decay=0", r"finetune.layer_decay=0.0 must be between 0 and 1 \(0 excluded\)"),
])
def test_out_of_range_settings_stop_before_any_training(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_class_names_that_look_like_formulas_stay_text_in_predictions_csv(tmp_path):
    out = Predictions([Path("a.png")], ["=HYPERLINK(\"x\")", "@cmd", "spiral"], np.array([[0.7, 0.2, 0.1]]), [])
    out.write_csv(tmp_path / "p.csv")
    header, row = list(csv.reader(open(tmp_path / "p.csv")))
    assert header[2:] == ["p_=HYPERLINK(\"x\")", "p_@cmd", "p_spiral"]
    assert row[1] == "'=HYPERLINK(\"x\")"


def test_class_names_with_dollar_signs_are_drawn_as_written(tmp_path):
    classes = ["$\\frac{broken$", "$\\alpha$"]
    path = plots.confusion_matrices(np.array([[3, 1], [0, 2]]), classes, "test", tmp_path / "cm.png")
    assert path.stat().st_size > 0


def test_a_batch_of_only_unreadable_files_is_an_empty_batch(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(b"not an image")
    batches = list(iter_decoded(paths, 16, 1.0, 0, 64, "decode"))
    (indices, pixels, _, bad), = batches
    assert indices == [] and pixels.shape == (0, 3, 16, 16) and len(bad) == 3


@pytest.mark.parametrize("edit, message", [
    ({"decision": {"temperature": 0, "offsets": []}}, "temperature 0 must be above 0"),
    ({"decision": {"temperature": 1.0, "offsets": [0.1]}}, "1 offsets for 3 classes"),
    ({"image_size": 0}, "'image_size' 0 must be"),
])
def test_an_edited_model_description_is_one_clear_error(tmp_path, weights_file, edit, message):
    import json

    from galaxytune.errors import ModelError
    from galaxytune.inference.saved import ModelInfo, load_model, save_model
    from galaxytune.models.backbone import create_classifier

    net = create_classifier("mobilenetv1_100", 3, str(weights_file))
    save_model(net, ModelInfo("mobilenetv1_100", ["a", "b", "c"], 32, 1.0, [0.5] * 3, [0.5] * 3), tmp_path)
    info = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**info, **edit}))
    with pytest.raises(ModelError, match=message):
        load_model(tmp_path)
