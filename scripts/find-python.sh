# Sourced by scripts/*: find_python prints a Python 3.12 (else 3.13) interpreter.
# Order: $PYTHON; pyenv with the repo's .python-version (3.12.1 and 3.13.0); python3.12 /
# python3.13 on PATH. The machine's default python3 (3.11) is too old for Synalinks.
find_python() {
    local repo="$1" minor candidate
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    for minor in 3.12 3.13; do
        if command -v pyenv >/dev/null 2>&1; then
            candidate="$(cd "$repo" && pyenv which "python$minor" 2>/dev/null || true)"
            if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return; fi
        fi
        if command -v "python$minor" >/dev/null 2>&1 && "python$minor" -c pass 2>/dev/null; then
            command -v "python$minor"; return
        fi
    done
    echo "needs Python 3.12 or 3.13 (set PYTHON=/path/to/python3.12)" >&2
    return 1
}

# find_python_minor REPO 3.13 prints that minor version's interpreter: $PYTHON<major><minor>
# (e.g. PYTHON313), pyenv with the repo's .python-version, or python3.13 on PATH.
find_python_minor() {
    local repo="$1" minor="$2" var="PYTHON${2//./}" candidate
    if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
    if command -v pyenv >/dev/null 2>&1; then
        candidate="$(cd "$repo" && pyenv which "python$minor" 2>/dev/null || true)"
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return; fi
    fi
    if command -v "python$minor" >/dev/null 2>&1 && "python$minor" -c pass 2>/dev/null; then
        command -v "python$minor"; return
    fi
    echo "needs Python $minor (set $var=/path/to/python$minor)" >&2
    return 1
}
