"""Compare two JUnit XML reports of the same test suite: which tests changed outcome.

    python scripts/compat_diff.py plain.xml traced.xml

Prints the outcome counts of each run and every test whose outcome differs (including
tests present in one run only). Exit status 0 when the outcomes are identical, 1 when
they differ. Used by scripts/compat-synalinks-tests.
"""

import collections
import sys
import xml.etree.ElementTree as ET


def outcomes(path):
    """{test id: "passed" | "failed" | "error" | "skipped"} of a JUnit XML file."""
    result = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        if "error" in kinds:
            outcome = "error"
        elif "failure" in kinds:
            outcome = "failed"
        elif "skipped" in kinds:
            outcome = "skipped"
        else:
            outcome = "passed"
        # A test erroring in teardown after passing is reported twice: keep the worst.
        if result.get(name) in ("failed", "error") and outcome == "passed":
            continue
        result[name] = outcome
    return result


def message(path, test_id):
    """First line of the failure/error message of one test, for the report."""
    for case in ET.parse(path).getroot().iter("testcase"):
        if f"{case.get('classname', '')}::{case.get('name', '')}" != test_id:
            continue
        for child in case:
            if child.tag in ("failure", "error"):
                text = (child.get("message") or child.text or "").strip().splitlines()
                return text[0][:200] if text else ""
    return ""


def main(argv):
    plain_path, traced_path = argv
    plain, traced = outcomes(plain_path), outcomes(traced_path)
    for label, result in (("without tracing", plain), ("SYNALINKS_OBSERVABILITY=1", traced)):
        counts = collections.Counter(result.values())
        summary = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "error", "skipped"))
        print(f"{label:<26} {len(result)} tests: {summary}")
    differing = sorted(
        name for name in set(plain) | set(traced) if plain.get(name) != traced.get(name)
    )
    if not differing:
        print("identical outcomes: every test passes, fails or is skipped the same way")
        return 0
    print(f"{len(differing)} test(s) differ:")
    for name in differing:
        before, after = plain.get(name, "absent"), traced.get(name, "absent")
        why = message(traced_path, name) if after in ("failed", "error") else ""
        print(f"  {name}: {before} -> {after}" + (f"  ({why})" if why else ""))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
