"""`esc50tf tune`: hyperparameter search with KerasTuner that never sees the test fold.

    DATA, test fold K
    -> splits.protocol_splits (as train): training folds, validation carved from them by src_file
    -> KerasTuner (random search, Bayesian optimisation or Hyperband) over a
       search space of optimizer, learning rate, weight decay, batch size,
       model, front end, augmentation strengths, dropout and model-specific
       sizes; each trial's values become a full esc50tf RunConfig, the model
       is built, fitted on the training side and scored on the validation side
    -> trials.csv / trials.md / objective.png, best_hyperparameters.json
    -> the best RunConfig retrained with esc50tf.train.train into OUT/best_run/
       and tested on fold K (or with k-fold CV, `cv=True`)

Only the training folds' shards are opened during the search: the test fold
first appears in the retraining's final prediction. With `cv=True` the best
settings are also scored by k-fold CV; the folds other than K helped choose
them, so only fold K's score is free of the search (an unbiased CV estimate
would need a search per fold, i.e. nested CV).

The package: `space` (the searchable settings `PARAMS`, `DEFAULT_SPACE`,
space files and their checks), `hyperparameters` (a space as KerasTuner
hyperparameters and a trial's values as a RunConfig), `trials` (the KerasTuner
tuner whose trials build and fit esc50tf models through their task),
`results` (trials.csv / trials.md / objective.png) and `run` (`TuneConfig`,
`tune`: the output folder, the search, the retraining).

The search space (`DEFAULT_SPACE`, see `PARAMS` for what each name sets) can
be changed with a JSON (or, with PyYAML installed, YAML) file of entries like

    {"lr": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
     "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
     "n_mels": {"type": "fixed", "value": 64},
     "dropout": null}

where `null` takes the name out of the search (the preset's value is used).
A flag such as `--lr` or `--n-mels` fixes the setting it names the same way.

The KerasTuner project lives in OUT/search/: a search interrupted by Ctrl-C
or a crash continues when started again with the same settings, as a run of
`esc50tf train` does (finished trials are kept, the interrupted one runs again
with the same values; other settings are refused unless `overwrite`), and a trial that raises
(out of memory, a bad combination of settings...) is recorded as failed while
the search goes on, until `max_failures` trials in a row have failed.

Example:
>>> cfg = TuneConfig(data="tfrecords", out="tune-gru", models=("gru",), max_trials=20,
...                  epochs=30, test_fold=1)
>>> summary = tune(cfg)          # OUT/trials.md, OUT/best_run/report.md
"""

from esc50tf.tune.hyperparameters import SearchSpace
from esc50tf.tune.results import BEST_RUN, PROJECT, TRIAL_META, trial_rows, write_results
from esc50tf.tune.run import OBJECTIVES, TUNERS, TuneConfig, tune
from esc50tf.tune.space import (DEFAULT_SPACE, PARAMS, SAMPLINGS, Param, applies_to,
                                condition_of, describe_space, fixed_by_flags, read_space_file,
                                resolve_models, resolve_space, validate_entry)

__all__ = ["BEST_RUN", "DEFAULT_SPACE", "OBJECTIVES", "PARAMS", "PROJECT", "Param", "SAMPLINGS",
           "SearchSpace", "TRIAL_META", "TUNERS", "TuneConfig", "applies_to", "condition_of",
           "describe_space", "fixed_by_flags", "read_space_file", "resolve_models",
           "resolve_space", "trial_rows", "tune", "validate_entry", "write_results"]
