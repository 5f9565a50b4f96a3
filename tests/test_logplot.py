"""The training loss plot (f1core.train.logplot), drawn with matplotlib."""
import numpy as np
from PIL import Image

from f1core.train.logplot import plot_losses


def test_loss_plot_is_drawn_at_the_asked_size_with_every_series(tmp_path):
    records = [{"stage": "vae", "step": s, "loss": 1.0 / s, "l1_loss": 2.0 / s} for s in range(1, 200)]
    path = plot_losses(records, tmp_path / "loss.png", size=(900, 500))
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert image.shape == (500, 900, 3)
    # matplotlib's first two cycle colours (C0 blue, C1 orange): one line per loss key
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(image - colour).sum(-1) < 30).sum() > 200, colour


def test_an_empty_log_still_gives_a_plot(tmp_path):
    assert Image.open(plot_losses([], tmp_path / "loss.png")).size == (900, 500)
