"""`slr-report`: two runs (or a grid of experiments) compared for a pull request's reviewer.

What differs in params, the metrics side by side with paired intervals and McNemar p-values from the committed
per-clip predictions, whether each run's results still belong to its params and code, and `dvc plots diff` rendered
to PNG, in one markdown file with its images. Read in data-flow order: revisions (reading a commit, an experiment or
the workspace) -> staleness -> stats -> compare -> plots -> markdown -> grid -> cli.

Nothing here imports torch: the pull-request job installs requirements-report.txt only (tests/test_report.py checks
the import closure).
"""
