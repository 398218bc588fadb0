"""python -m tests.golden: rewrite the golden requests after a deliberate mapping change."""

from tests.golden import write

for path in write():
    print(f"wrote {path}")
