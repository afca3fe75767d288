"""Training, shared by ``training/train.py`` (the shipped models) and fine-tuning on a user's corrections.

- :mod:`.augment`: training targets, the augmentation and the crops;
- :mod:`.loss`: the loss, with pixels the user did not check left out;
- :mod:`.loop`: the one optimisation loop both run;
- :mod:`.finetune`: fine-tuning a weights file on corrected labels.

Importing this subpackage imports torch; ``import napari_nucleiseg`` does not import it.
"""
