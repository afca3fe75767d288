"""The scripts that train, calibrate and evaluate the bundled models; run them from the repository
root as modules, e.g. ``python -m training.train --help``.

- :mod:`training.train`: train a model on DSB2018 (and H&E sets) into a weights file;
- :mod:`training.calibrate` / :mod:`training.evaluate`: choose its post-processing settings on
  val parts, and score every model on every set;
- :mod:`training.score_folder`: score the label files the command line wrote;
- :mod:`training.data`, :mod:`training.metrics`: the data, augmentation and scores they share.
"""
