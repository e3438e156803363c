"""``python -m novaza_gateway``: the same command as ``novaza``."""

from novaza_gateway.cli import main

if __name__ == "__main__":
    main()
