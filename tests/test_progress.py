"""The console's progress lines (tuning/trial.py, ProgressLines): few enough to read, none of the ends missed."""

import json
import logging
from dataclasses import asdict
from types import SimpleNamespace

from rnn_models.config import ModelConfig, TrainConfig
from rnn_models.tuning import trial as trial_module
from rnn_models.tuning.trial import ProgressLines


def _result(epoch: int, epochs: int) -> dict:
    configs = {"model": asdict(ModelConfig(arch="lstm")), "train": asdict(TrainConfig(epochs=epochs))}
    return {"epoch": epoch, "train_accuracy": 0.5, "val_accuracy": 0.5, "epoch_seconds": 10.0,
            "samples_per_second": 100.0, "configs_json": json.dumps(configs)}


def _printed_epochs(progress: ProgressLines, seconds_per_epoch: float, epochs: int, monkeypatch, caplog) -> list[int]:
    clock = iter(seconds_per_epoch * e for e in range(1, epochs + 1))
    monkeypatch.setattr(trial_module.time, "monotonic", lambda: next(clock))
    trial = SimpleNamespace(config={"arch": "lstm"}, trial_id="t1")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=trial_module.__name__):
        for epoch in range(1, epochs + 1):
            progress.on_trial_result(epoch, [trial], trial, _result(epoch, epochs))
    return [int(r.getMessage().split("epoch ")[1].split("/")[0]) for r in caplog.records]


def test_epoch_lines_come_every_30_seconds_with_the_first_and_last_always(monkeypatch, caplog):
    assert _printed_epochs(ProgressLines(), 10, 10, monkeypatch, caplog) == [1, 4, 7, 10]
    assert _printed_epochs(ProgressLines(), 40, 4, monkeypatch, caplog) == [1, 2, 3, 4]  # slow epochs: each


def test_verbose_prints_every_epoch(monkeypatch, caplog):
    monkeypatch.setattr(trial_module, "verbose", lambda: True)
    assert _printed_epochs(ProgressLines(), 1, 5, monkeypatch, caplog) == [1, 2, 3, 4, 5]


def test_ray_datas_no_free_cpu_notice_stays_off_the_console():
    from rnn_models.cluster import show_ray_logs

    show_ray_logs(False)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("ray.data.dataset")
    logger.addHandler(handler)
    try:
        logger.warning("Warning: The Ray cluster currently does not have any available CPUs. The Dataset job will hang")
        logger.warning("a block failed")
    finally:
        logger.removeHandler(handler)
    assert seen == ["a block failed"]
