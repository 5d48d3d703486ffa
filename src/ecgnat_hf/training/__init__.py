"""Training glue: the comparison baseline, model cards and plots (recipes live in ``recipes/``)."""
