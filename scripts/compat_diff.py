"""Compare two JUnit XML reports of the same test suite: which tests changed outcome.

    python scripts/compat_diff.py plain.xml traced.xml [--spans spans.json --meta meta.json
                                                        --report report.md]

Prints the outcome counts of each run and every test whose outcome differs (including
tests present in one run only), and every test that fails (or errors) in both runs but
with a different exception type. With ``--report``, writes the same as a Markdown report
(with the run's versions from ``--meta`` and the spans the traced run wrote from
``--spans``, both JSON files of scripts/compat-synalinks-tests). Exit status 0 when the
outcomes and exception types are identical, 1 when they differ. Used by
scripts/compat-synalinks-tests.
"""

import argparse
import collections
import json
import re
import sys
import xml.etree.ElementTree as ET

OUTCOMES = ("passed", "failed", "error", "skipped")
_NAME = r"[A-Za-z_][\w.]*"
_EXC_WORDS = r"(?:Error|Exception|Exit|Interrupt|Warning|Failed|Timeout|Cancelled|Invalid)"


def exception_type(message: str, text: str) -> str:
    """The exception type of a failure/error, from pytest's message (``ValueError: ...``,
    ``failed on setup with "KeyError: ..."``, ``assert ...``) or the traceback's ``E`` lines."""
    message = re.sub(r'^failed on \w+ with "', "", (message or "").strip())
    found = re.match(rf"({_NAME})(?::|$)", message)
    if found and (re.search(_EXC_WORDS, found.group(1)) or "." in found.group(1)):
        return found.group(1).rsplit(".", 1)[-1]
    for line in (text or "").splitlines():
        found = re.match(rf"E\s+({_NAME}{_EXC_WORDS}\w*)\b", line)
        if found:
            return found.group(1).rsplit(".", 1)[-1]
    if message.startswith("assert") or "AssertionError" in (text or ""):
        return "AssertionError"
    return "unknown"


def results(path):
    """{test id: (outcome, exception type or "")} of a JUnit XML file."""
    result = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag: child for child in case}
        kind = next((k for k in ("error", "failure", "skipped") if k in kinds), None)
        outcome = {"error": "error", "failure": "failed", "skipped": "skipped", None: "passed"}[kind]
        exc = ""
        if kind in ("error", "failure"):
            exc = exception_type(kinds[kind].get("message", ""), kinds[kind].text or "")
        # A test erroring in teardown after passing is reported twice: keep the worst.
        if name in result and result[name][0] in ("failed", "error") and outcome == "passed":
            continue
        result[name] = (outcome, exc)
    return result


def outcomes(path):
    """{test id: "passed" | "failed" | "error" | "skipped"} of a JUnit XML file."""
    return {name: outcome for name, (outcome, _) in results(path).items()}


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


def compare(plain_path, traced_path):
    plain, traced = results(plain_path), results(traced_path)
    counts = {label: collections.Counter(o for o, _ in run.values())
              for label, run in (("plain", plain), ("traced", traced))}
    differing = []
    for name in sorted(set(plain) | set(traced)):
        before, after = plain.get(name, ("absent", "")), traced.get(name, ("absent", ""))
        if before[0] != after[0]:
            why = message(traced_path, name) if after[0] in ("failed", "error") else ""
            differing.append(f"{name}: {before[0]} -> {after[0]}" + (f"  ({why})" if why else ""))
        elif before[1] != after[1]:
            differing.append(f"{name}: {before[0]} with {before[1]} -> {after[0]} with {after[1]}")
    failing_both = sum(1 for name, (o, _) in plain.items() if o in ("failed", "error")
                       and traced.get(name, ("",))[0] == o)
    return plain, traced, counts, differing, failing_both


def summary_line(counts, total):
    return f"{total} tests: " + ", ".join(f"{counts[k]} {k}" for k in OUTCOMES)


def report(path, plain, traced, counts, differing, failing_both, spans, meta):
    lines = [f"# Synalinks {meta.get('synalinks', '?')}: its own test suite with and without tracing", ""]
    lines += [
        "Re-create: `" + meta.get("command", "scripts/compat-synalinks-tests") + "` "
        "(see [docs/compatibility.md](../docs/compatibility.md)).", "",
        "| | |", "|---|---|",
        f"| Synalinks | {meta.get('synalinks', '?')} (its wheel's `synalinks/src/**/*_test.py`) |",
        f"| Python | {meta.get('python', '?')} |",
        f"| MLflow | {meta.get('mlflow', '?')} |",
        f"| synalinks-obs | {meta.get('synalinks_obs', '?')} |",
        f"| date | {meta.get('date', '?')} |",
        f"| pytest workers | {meta.get('workers', '?')} |",
        "",
        "## Outcomes", "",
        "| run | tests | passed | failed | error | skipped | time |", "|---|---|---|---|---|---|---|",
    ]
    for label, key, run in (("without tracing", "plain", plain),
                            ("`SYNALINKS_OBSERVABILITY=1`", "traced", traced)):
        c = counts[key]
        lines.append(f"| {label} | {len(run)} | " + " | ".join(str(c[k]) for k in OUTCOMES)
                     + f" | {meta.get(key + '_seconds', '?')} s |")
    lines.append("")
    if differing:
        lines += [f"**{len(differing)} test(s) differ** (outcome, or exception type of a test "
                  "failing in both runs):", ""]
        lines += [f"- `{item}`" for item in differing]
    else:
        lines += ["**Identical outcomes**: every test passes, fails or is skipped the same way, "
                  f"and the {failing_both} tests that fail in both runs fail with the same "
                  "exception type. (They fail without tracing too: no network, no provider "
                  "keys, optional services missing on the machine that ran it.)"]
    lines += ["", "## Spans the traced run wrote", ""]
    if spans:
        lines += [f"Read back from its store through `MlflowClient.search_traces`: "
                  f"**{spans['traces']} traces, {spans['spans']} spans**; the run fails when a "
                  f"worker wrote fewer than {spans['minimum_spans_per_worker']} spans.", "",
                  "| worker | traces | spans |", "|---|---|---|"]
        for name, entry in spans["workers"].items():
            lines.append(f"| {name} | {entry['traces']} | {entry['spans']} |")
    else:
        lines.append("(not counted)")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plain")
    parser.add_argument("traced")
    parser.add_argument("--spans")
    parser.add_argument("--meta")
    parser.add_argument("--report")
    args = parser.parse_args(argv)
    plain, traced, counts, differing, failing_both = compare(args.plain, args.traced)
    print(f"{'without tracing':<26} {summary_line(counts['plain'], len(plain))}")
    print(f"{'SYNALINKS_OBSERVABILITY=1':<26} {summary_line(counts['traced'], len(traced))}")
    if args.report:
        spans = json.load(open(args.spans)) if args.spans else None
        meta = json.load(open(args.meta)) if args.meta else {}
        report(args.report, plain, traced, counts, differing, failing_both, spans, meta)
    if not differing:
        print("identical outcomes: every test passes, fails or is skipped the same way "
              f"({failing_both} failing in both runs, each with the same exception type)")
        return 0
    print(f"{len(differing)} test(s) differ:")
    for item in differing:
        print(f"  {item}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
