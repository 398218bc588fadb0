"""Performance bench: the real stages against fast loopback vendors, inline and driven by the
host's consumers (the lanes mode: isolation, drain, Service Bus and ledger cost), beside a
seed-style baseline and a bare floor. Run `python -m bench --help`; see docs/performance.md."""
