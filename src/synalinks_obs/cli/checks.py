"""The doctor's checks of the installation: tracing, versions, start-up hook, settings.

Each check returns one ``Check`` (a line, and the fix when it fails). The store checks
live in ``cli.store_checks``; ``cli.doctor`` runs them all.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from synalinks_obs.patching import versions


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "[ ok ]" if self.ok else "[FAIL]"
        text = f"{mark} {self.name}: {self.detail}"
        if not self.ok and self.fix:
            text += f" -> fix: {self.fix}"
        return text


_HOW = {
    "env": "SYNALINKS_OBSERVABILITY=1 (the synalinks_obs.pth start-up hook)",
    "run": "python -m synalinks_obs.run (the launcher)",
    "enable()": "synalinks_obs.enable()",
    "synalinks": "synalinks.enable_observability(), routed to synalinks-obs",
}
_TURN_ON = (
    "run the app with SYNALINKS_OBSERVABILITY=1, or python -m synalinks_obs.run app.py, or "
    "call synalinks_obs.enable(); check a launcher set-up with "
    "python -m synalinks_obs.run -m synalinks_obs doctor --require-tracing"
)


def check_tracing(enabled: bool, source: str | None, require: bool) -> Check:
    """Whether tracing is on here; when it is not, what the app's own start would do."""
    if enabled:
        return Check(
            "tracing", True,
            f"on, activated by {_HOW.get(source, str(source))}; synalinks.enable_observability() "
            "calls are routed to synalinks-obs (one span per module call)",
        )
    from synalinks_obs._bootstrap import ENV_VAR, parse_flag

    value = os.environ.get(ENV_VAR)
    flag = parse_flag(value)
    if flag is None:
        return Check("tracing", False, f"{ENV_VAR}={value!r} is not a boolean", f"set {ENV_VAR}=1 (or 0)")
    if require:
        return Check("tracing", False, "off in this process (--require-tracing)", _TURN_ON)
    return Check(
        "tracing", True,
        f"off in this doctor ({ENV_VAR} is {'unset' if value is None else repr(value)}); an app "
        "traces when started with the launcher, SYNALINKS_OBSERVABILITY=1 or enable(): the "
        "checks below use the configuration it would use",
    )


def check_early_modules() -> Check:
    """Call a module built *before* patching and see that its call is recorded."""
    name = "modules built early"
    try:
        import synalinks

        from synalinks_obs.cli.probe_call import traced_probe_call
    except Exception as exc:
        return Check(name, False, f"cannot import synalinks ({type(exc).__name__}: {exc})",
                     "pip install 'synalinks>=0.9'")
    try:
        recorded = traced_probe_call(synalinks)
    except Exception as exc:
        return Check(name, False, f"the check failed ({type(exc).__name__}: {exc})",
                     "report this with the synalinks and mlflow versions")
    wanted = ("BuiltBefore:doctor_built_before", "DefinedAfter:doctor_defined_after")
    missing = [span for span in wanted if span not in recorded]
    if missing:
        return Check(name, False, f"not traced: {', '.join(missing)} (recorded: {recorded})",
                     "use a supported Synalinks version and report this")
    return Check(
        name, True,
        "none are missed: a module built before activation and a subclass defined after it "
        f"were both called and traced ({', '.join(recorded)})",
    )


def check_version(distribution: str) -> Check:
    version = versions.installed(distribution)
    wanted = versions.describe(distribution)
    if version is None:
        return Check(distribution, False, "not installed", f"pip install '{distribution}{wanted}'")
    if not versions.is_supported(distribution, version):
        return Check(distribution, False, f"{version} is not supported (needs {wanted})",
                     f"pip install -U '{distribution}{wanted}'")
    return Check(distribution, True, f"{version} (supported: {wanted})")


def find_pth() -> list[str]:
    """The ``synalinks_obs.pth`` files in this interpreter's site directories."""
    import site

    directories = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if user:
        directories.append(user)
    directories += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    seen, found = set(), []
    for directory in directories:
        path = os.path.join(directory, "synalinks_obs.pth")
        if path not in seen and os.path.isfile(path):
            seen.add(path)
            found.append(path)
    return found


def check_pth() -> Check:
    found = find_pth()
    if not found:
        return Check(
            "start-up hook", False,
            "no synalinks_obs.pth in any site directory: SYNALINKS_OBSERVABILITY=1 does nothing "
            "here (an editable install, pip install --target, or a PYTHONPATH copy)",
            "install synalinks-obs from a wheel into the app's environment (not -e), or start "
            "the app with python -m synalinks_obs.run",
        )
    path = found[0]
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if "synalinks_obs._bootstrap" not in text:
        return Check("start-up hook", False, f"{path} does not call synalinks_obs._bootstrap",
                     "reinstall synalinks-obs (pip install --force-reinstall synalinks-obs)")
    return Check("start-up hook", True, f"{path} present")


def check_settings() -> Check:
    from synalinks_obs.settings import ENV_PREFIX, load_settings

    problems: list[str] = []
    try:
        load_settings(report=problems.append)
    except Exception as exc:
        return Check("settings", False, str(exc), "fix the variable named above")
    if problems:
        return Check("settings", False, "; ".join(p.removeprefix("synalinks-obs: ") for p in problems),
                     "fix or unset the variables named (their defaults are used meanwhile)")
    names = sorted(k for k in os.environ if k.startswith(ENV_PREFIX))
    return Check("settings", True, f"valid ({', '.join(names) if names else 'all defaults'})")


def check_fallbacks() -> Check:
    """Private names of a dependency that were missing (``compat.fallbacks_in_use``)."""
    from synalinks_obs.compat import fallbacks_in_use

    used = fallbacks_in_use()
    if not used:
        return Check("compatibility", True, "every patch point of the installed versions was found")
    detail = "; ".join(f"{name} missing: {effect}" for name, effect in used.items())
    return Check("compatibility", False, detail,
                 "use the tested versions (README, Compatibility) or report the new release")


def check_patches() -> Check:
    """What synalinks-obs has patched in this process (``RUNTIME.patches``), by group."""
    from collections import Counter

    from synalinks_obs.runtime import RUNTIME

    lines = RUNTIME.patches.describe()
    if not lines:
        return Check("patches", True, "nothing patched in this process (an app patches Synalinks "
                     "when it imports it; python -m synalinks_obs doctor --json lists them there)")
    groups = Counter(line.split(":", 1)[0] for line in lines)
    return Check("patches", True, f"{len(lines)} attributes patched in this process: "
                 + ", ".join(f"{group} ({count})" for group, count in groups.items()))
