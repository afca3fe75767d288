"""Training, shared by ``training/train.py`` (the shipped models) and fine-tuning on a user's corrections.

- :mod:`.augment`: training targets, the augmentation and the crops;
- :mod:`.loss`: the loss, with pixels the user did not check left out;
- :mod:`.loop`: the one optimisation loop both run;
- :mod:`.finetune`: fine-tuning a weights file on corrected labels.

Its modules import torch; this file does not (the widget and the command line read the defaults
below without it), and ``import napari_nucleiseg`` imports neither.
"""

#: Default time budget of a fine-tuning run (minutes).
DEFAULT_MINUTES = 2.0
