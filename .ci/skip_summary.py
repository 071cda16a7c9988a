"""CI's last words: how many tests passed and skipped, and the skips grouped by reason.

pytest's own -ra summary lists skips per test file and line; CI wants the count per
reason, so that "40 skipped: no CUDA GPU/CuPy" and a missing PyTorch (the parity
tests) stand out. Reads the JUnit XML that .ci/run asks pytest for.

    python .ci/skip_summary.py .venv-ci/junit.xml
"""
import collections
import re
import sys
import xml.etree.ElementTree as ET


def _reason(message: str) -> str:
    """One reason per cause: importorskip's message names the module, not the test."""
    message = " ".join(message.split())
    missing = re.match(r"could not import '([\w.]+)'", message)
    return f"{missing.group(1)} is not installed" if missing else message


def main(path: str) -> int:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        print(f"ci: no test report to summarise ({exc})")
        return 0
    counts = collections.Counter()
    skips = collections.Counter()
    for case in root.iter("testcase"):
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            counts["passed"] += 1
        elif outcome.tag == "skipped" and outcome.get("type") == "pytest.xfail":
            counts["xfailed"] += 1
        elif outcome.tag == "skipped":
            counts["skipped"] += 1
            skips[_reason(outcome.get("message", "") or "no reason given")] += 1
        else:
            counts["failed" if outcome.tag == "failure" else "errors"] += 1
    order = ("passed", "failed", "errors", "skipped", "xfailed")
    print("ci: " + ", ".join(f"{counts[key]} {key}" for key in order if counts[key] or key in ("passed", "skipped")))
    for reason, n in skips.most_common():
        print(f"ci:   {n:4d} skipped: {reason}")
    if any(reason == "torch is not installed" or "PyTorch" in reason for reason in skips):
        print("ci: PyTorch is missing, so the parity tests against it did not run (see the bench install above)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
