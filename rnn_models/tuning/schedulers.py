"""The schedulers `rnn-models tune` offers beside FIFO."""

import pickle

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler


class PerArchASHA(FIFOScheduler):
    """ASHA within each architecture: one ASHAScheduler per arch, so that a trial is stopped early only for
    scoring below the other trials of its own architecture (one shared ASHA stops every MLP trial once the
    LSTMs score higher, and the best MLP configuration it reports is then an accident of its rungs)."""

    def __init__(self, **asha):
        super().__init__()
        self._asha, self._by_arch, self._search = asha, {}, {}

    def set_search_properties(self, metric, mode, **spec) -> bool:
        self._metric, self._search = metric, {"metric": metric, "mode": mode, **spec}
        return all(s.set_search_properties(metric, mode, **spec) for s in self._by_arch.values())

    def _of(self, trial) -> ASHAScheduler:
        arch = trial.config["arch"]
        if arch not in self._by_arch:
            self._by_arch[arch] = ASHAScheduler(**self._asha)
            self._by_arch[arch].set_search_properties(**self._search)
        return self._by_arch[arch]

    def on_trial_add(self, tune_controller, trial):
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial):
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{arch}: {s.debug_string()}" for arch, s in self._by_arch.items())

    def save(self, checkpoint_path: str):
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str):
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
