"""The console's progress lines (tuning/experiment.py, ProgressLines): few enough to read, none of the ends missed."""

import logging
from types import SimpleNamespace

from rnn_models.tuning import experiment as experiment_module
from rnn_models.tuning.experiment import ProgressLines


def _result(epoch: int, epochs: int) -> dict:
    return {
        "epoch": epoch,
        "train_accuracy": 0.5,
        "val_accuracy": 0.5,
        "epoch_seconds": 10.0,
        "samples_per_second": 100.0,
        "planned_epochs": epochs,  # what every epoch's report carries beside its configs
    }


def _printed(results: list[tuple[float, str, int, int]], monkeypatch, caplog, **options) -> list[str]:
    """The lines ProgressLines prints for `results`: (seconds since the run started, arch, epoch, epochs) each."""
    clock = [0.0]
    monkeypatch.setattr(experiment_module.time, "monotonic", lambda: clock[0])
    progress = ProgressLines(**options)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=experiment_module.__name__):
        for seconds, arch, epoch, epochs in results:
            clock[0] = seconds
            trial = SimpleNamespace(config={"arch": arch}, trial_id=f"t-{arch}")
            progress.on_trial_result(epoch, [trial], trial, _result(epoch, epochs))
    return [
        r.getMessage().split(":")[0] if " epoch " in r.getMessage() else r.getMessage()
        for r in caplog.records
    ]


def test_first_and_last_epochs_get_a_line_each_and_the_others_one_line_a_minute(monkeypatch, caplog):
    # lstm: 10 epochs of 10 s; mlp: 20 epochs of 5 s
    results = sorted(
        [(10.0 * e, "lstm", e, 10) for e in range(1, 11)] + [(5.0 * e, "mlp", e, 20) for e in range(1, 21)]
    )
    assert _printed(results, monkeypatch, caplog) == [
        "mlp epoch 1/20",
        "lstm epoch 1/10",
        "epochs: mlp 11/20 (val 0.5000), lstm 6/10 (val 0.5000)",  # at 60 s: each trial's latest epoch
        "lstm epoch 10/10",
        "mlp epoch 20/20",
    ]  # at 100 s: their last epochs; none between (under a minute)


def test_verbose_prints_every_epoch(monkeypatch, caplog):
    monkeypatch.setattr(experiment_module, "verbose", lambda: True)
    results = [(1.0 * e, "lstm", e, 5) for e in range(1, 6)]
    assert _printed(results, monkeypatch, caplog) == [f"lstm epoch {e}/5" for e in range(1, 6)]


def test_ray_datas_no_free_cpu_notice_stays_off_the_console():
    from rnn_models.cluster import show_ray_logs

    show_ray_logs(False)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("ray.data.dataset")
    logger.addHandler(handler)
    try:
        logger.warning(
            "Warning: The Ray cluster currently does not have any available CPUs. The Dataset job will hang"
        )
        logger.warning("a block failed")
    finally:
        logger.removeHandler(handler)
    assert seen == ["a block failed"]
