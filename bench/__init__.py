"""Performance bench: the real core against fast loopback vendors, beside a seed-style baseline,
a bare floor and a batch simulation. Run `python -m bench --help`; see docs/performance.md."""
