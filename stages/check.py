"""DVC stage `check`: validate params.yaml, and what it asks of the model zoo and this machine, before any stage runs.

DVC deletes a stage's outputs before it runs the stage, so a bad value met by, say, the train stage would cost the
finished run's checkpoints. Every other stage comes after this one, which fails first, with one line, and writes
nothing but MARKER (a persistent output with fixed content: passing the check changes nothing downstream).
"""

from pathlib import Path

from slr.cli import run_main, stage_parser

MARKER = "params.yaml passed the check stage (stages/check.py)\n"


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("marker", type=Path, help="written once the check passes (dvc.yaml: reports/params.ok)")
    args = parser.parse_args()
    from slr.checks import check_experiment  # torch: imported once the arguments are known
    from slr.files import atomic_path
    from slr.params import load_params

    params = load_params(args.params)
    devices = check_experiment(params)
    if not args.marker.is_file() or args.marker.read_text() != MARKER:
        with atomic_path(args.marker) as tmp:
            tmp.write_text(MARKER)
    print(f"check: {args.params} is valid for model {params.model} on this machine (train on {devices['train']}, "
          f"evaluate on {devices['evaluate']})")


if __name__ == "__main__":
    run_main(main)
