"""Training glue: datasets and collators, arguments, hub-ready checkpoints, model cards, thresholds (recipes live in
``recipes/``, the models in ``models/``, figures in ``plotting/``)."""
