"""`python -m slr.review ...` is `slr-report ...` (where the project is not installed, as in the pull-request job)."""

from slr.review.cli import cli

if __name__ == "__main__":
    cli()
