"""``python -m synalinks_obs.run``: the launcher's public path (``synalinks_obs.cli.run``).

Run ``python -m synalinks_obs.run --help`` for its usage.
"""

from synalinks_obs.cli.run import main, parse_args  # noqa: F401  (the public entry points)

if __name__ == "__main__":
    main()
