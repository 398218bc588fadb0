"""`python -m bench --help`."""

from bench.cli import app

if __name__ == "__main__":
    app()
