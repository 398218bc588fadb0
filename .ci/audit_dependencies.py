"""The runtime dependency audit, reported honestly.

pip-audit says "No known vulnerabilities found" even when it could look up none of the packages
(the vulnerability service is not reachable from every machine). Here a package that could not be
looked up counts as "not audited", never as passed; a known vulnerability in a package that could
be looked up fails the build.

Usage: python .ci/audit_dependencies.py requirements.txt
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def summarise(report: dict[str, Any]) -> tuple[int, str]:
    """(exit code, one-paragraph summary) for pip-audit's JSON report."""
    dependencies = report.get("dependencies", [])
    skipped = [d for d in dependencies if "skip_reason" in d]
    audited = [d for d in dependencies if "skip_reason" not in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    lines = [f"dependency audit: {len(audited)} of {len(dependencies)} packages audited"]
    for dependency in vulnerable:
        ids = ", ".join(v.get("id", "?") for v in dependency["vulns"])
        lines.append(f"  VULNERABLE {dependency['name']} {dependency.get('version', '')}: {ids}")
    if skipped:
        reasons = sorted({d["skip_reason"].split(":")[0] for d in skipped})
        lines.append(f"  NOT AUDITED: {len(skipped)} packages ({'; '.join(reasons)})")
    if not audited:
        lines.append("  nothing could be audited here: this run says nothing about vulnerabilities")
    elif not vulnerable:
        lines.append("  no known vulnerabilities in the audited packages")
    return (1 if vulnerable else 0), "\n".join(lines)


def main(requirements: str) -> int:
    found = subprocess.run(  # noqa: S603 (pip-audit from this venv)
        [
            sys.executable,
            "-m",
            "pip_audit",
            "-r",
            requirements,
            "-f",
            "json",
            "--progress-spinner",
            "off",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(found.stdout)
    except ValueError:
        print(f"dependency audit: pip-audit failed to run ({found.stderr.strip()[-300:]})")
        return 1
    code, summary = summarise(report)
    print(summary)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements.txt"))
