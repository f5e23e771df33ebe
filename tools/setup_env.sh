#!/usr/bin/env bash
# One-command install of fiber-det into .venv/ at the repository root; safe to run again.
#
#   bash tools/setup_env.sh
#
# Steps: create .venv (Python >= 3.10) -> keep pip < 24.1 (newer pip refuses the pb1-detectron2
# metadata) -> requirements/base.txt and no-deps.txt, pinned by constraints.txt -> detectron2 ->
# fiber-det (editable) -> an import check. detectron2: a genuine build that is already importable
# (compiled detectron2._C) is kept untouched; otherwise detectron2 v0.6 is installed pure-Python from
# the pb1-detectron2 sdist with fiber_det/compat/detectron2_C.py as its _C module
# (fiber_det/compat/README.md lists what is patched and why).
# A finished run leaves a stamp keyed on its inputs; while they are unchanged a rerun only checks.
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
STAMP="$VENV/.fiber-det-setup.stamp"
CACHE="$VENV/fiber-det-cache"
PB1_SDIST="pb1-detectron2-0.6.tar.gz"
PB1_SHA256="5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
STANDIN="$ROOT/fiber_det/compat/detectron2_C.py"
START=$SECONDS
STEP="start"

trap 'echo "setup_env.sh: FAILED in step: $STEP (exit status $?; see the messages above)" >&2' ERR

step() {
    STEP="$1"
    echo "==> [setup_env] $1"
}

die() {
    echo "setup_env.sh: FAILED in step: $STEP: $*" >&2
    exit 1
}

pip_install() {
    "$PY" -m pip install --progress-bar off "$@"
}

inputs_hash() {
    cat tools/setup_env.sh setup.py requirements/*.txt "$STANDIN" | sha256sum | cut -d' ' -f1
}

# ---- quick exit when nothing changed --------------------------------------------------------
if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$(inputs_hash)" ]] &&
    "$PY" -I -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('detectron2') and u.find_spec('fiber_det')))"; then
    echo "==> [setup_env] .venv is up to date (inputs unchanged since the last successful run); nothing to do"
    exit 0
fi

# ---- 1. virtual environment -------------------------------------------------------------------
step "1/6 virtual environment at .venv"
if [[ ! -x "$PY" ]]; then
    BASE_PY=""
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c "import sys; sys.exit(sys.version_info < (3, 10))"; then
            BASE_PY=$(command -v "$candidate")
            break
        fi
    done
    [[ -n "$BASE_PY" ]] || die "no python3.11 or python3 >= 3.10 on PATH"
    echo "creating .venv with $BASE_PY ($("$BASE_PY" --version))"
    "$BASE_PY" -m venv "$VENV"
else
    echo "using the existing .venv ($("$PY" --version))"
fi

# ---- 2. pip ---------------------------------------------------------------------------------
step "2/6 pip < 24.1 (pip 24.1+ refuses the pb1-detectron2 sdist's metadata)"
if ! "$PY" -c "import sys, pip; sys.exit(tuple(map(int, pip.__version__.split('.')[:2])) >= (24, 1))"; then
    pip_install -c "$CONSTRAINTS" pip
fi
"$PY" -m pip --version

# ---- 3. dependencies ------------------------------------------------------------------------
step "3/6 dependencies: requirements/base.txt, no-deps.txt (torch alone is a few GB on a fresh venv)"
pip_install -r requirements/base.txt -c "$CONSTRAINTS"
pip_install --no-deps -r requirements/no-deps.txt -c "$CONSTRAINTS"

# ---- 4. detectron2 --------------------------------------------------------------------------
step "4/6 detectron2"
# Look at the files only: importing a compiled _C built for another torch can abort the process.
read -r D2_KIND D2_WHERE < <("$PY" - <<'EOF'
import importlib.machinery, importlib.metadata, importlib.util, pathlib
spec = importlib.util.find_spec("detectron2")
if spec is None or not spec.submodule_search_locations:
    print("absent -")
    raise SystemExit
where = pathlib.Path(list(spec.submodule_search_locations)[0])
compiled = [where / f"_C{s}" for s in importlib.machinery.EXTENSION_SUFFIXES if (where / f"_C{s}").exists()]
try:
    importlib.metadata.version("pb1-detectron2")
    pb1 = True
except importlib.metadata.PackageNotFoundError:
    pb1 = False
if compiled:
    print("compiled", compiled[0])
elif (where / "_C.py").exists() and "FIBER_DET_STANDIN = True" in (where / "_C.py").read_text():
    print("standin", where)
elif pb1:
    print("pb1-without-standin", where)
else:
    print("foreign", where)
EOF
)

install_pb1_detectron2() {
    local tmp src
    tmp=$(mktemp -d)
    mkdir -p "$CACHE"
    if ! echo "$PB1_SHA256  $CACHE/$PB1_SDIST" | sha256sum -c --status - 2>/dev/null; then
        echo "downloading $PB1_SDIST (pip $("$PY" -c 'import pip; print(pip.__version__)'); needs torch for its metadata)"
        "$PY" -m pip download --no-deps --no-build-isolation --progress-bar off -d "$tmp" "pb1-detectron2==0.6"
        echo "$PB1_SHA256  $tmp/$PB1_SDIST" | sha256sum -c --status - ||
            die "$PB1_SDIST from the package index does not have the sha256 $PB1_SHA256; refusing to install it"
        mv "$tmp/$PB1_SDIST" "$CACHE/$PB1_SDIST"
    fi
    echo "sha256 of $PB1_SDIST verified"
    tar -xzf "$CACHE/$PB1_SDIST" -C "$tmp"
    src="$tmp/pb1-detectron2-0.6"

    # Its own setup.py compiles detectron2/layers/csrc, which the sdist lacks, pins black, installs a
    # top-level `tools` package and misses the model-zoo configs: replace it.
    rm -rf "$src/tools" "$src"/*.egg-info
    cat >"$src/setup.py" <<'EOF'
# Written by fiber-det's tools/setup_env.sh: detectron2 v0.6, pure Python (no ext_modules).
from setuptools import find_packages, setup

PROJECTS = {
    "detectron2.projects.point_rend": "projects/PointRend/point_rend",
    "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
    "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}
setup(
    name="pb1-detectron2",
    version="0.6",
    packages=find_packages(include=["detectron2", "detectron2.*"]) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.6",
)
EOF
    # pkg_resources is gone from setuptools >= 82; a runtime stand-in for it would mislead every
    # other package that probes for it, so model_zoo finds its configs next to itself instead.
    "$PY" - "$src/detectron2/model_zoo/model_zoo.py" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
patches = [
    ("import pkg_resources\n", ""),
    ('    cfg_file = pkg_resources.resource_filename(\n'
     '        "detectron2.model_zoo", os.path.join("configs", config_path)\n'
     '    )\n',
     '    cfg_file = os.path.join(os.path.dirname(__file__), "configs", config_path)\n'),
]
for old, new in patches:
    if text.count(old) != 1:
        sys.exit(f"{path}: expected exactly one {old!r} to patch; is this detectron2 v0.6?")
    text = text.replace(old, new)
open(path, "w").write(text)
EOF
    cp "$STANDIN" "$src/detectron2/_C.py"
    pip_install --no-deps --no-build-isolation --use-pep517 --force-reinstall "$src"
    rm -rf "$tmp"
}

case "$D2_KIND" in
compiled)
    if "$PY" -c "from detectron2 import _C" 2>/dev/null; then
        echo "keeping the genuine detectron2 build with compiled _C at $D2_WHERE"
    else
        "$PY" -c "from detectron2 import _C" || true
        die "the compiled detectron2._C at $D2_WHERE does not load (error above): rebuild detectron2 for this torch, or uninstall it (pip uninstall detectron2) and rerun to get the pure-Python one"
    fi
    ;;
absent | standin | pb1-without-standin)
    echo "installing detectron2 v0.6 pure-Python from $PB1_SDIST with fiber-det's _C stand-in (found: $D2_KIND)"
    install_pb1_detectron2
    ;;
foreign)
    die "detectron2 at $D2_WHERE has no compiled _C and is not fiber-det's pure-Python install (an unfinished build?): finish building it, or uninstall it (pip uninstall detectron2), and rerun"
    ;;
*)
    die "could not inspect the installed detectron2 (got '$D2_KIND')"
    ;;
esac

# ---- 5. fiber-det ---------------------------------------------------------------------------
step "5/6 fiber-det (editable)"
pip_install --no-deps --no-build-isolation --use-pep517 -e .

# ---- 6. check -------------------------------------------------------------------------------
step "6/6 import check"
"$PY" - <<'EOF'
import fiber_det  # applies fiber_det.compat.ensure_detectron2()
import detectron2
from detectron2 import engine, evaluation, modeling  # noqa: F401  (fail here, not in a test)
from fiber_det.compat import has_compiled_detectron2

kind = "compiled _C" if has_compiled_detectron2() else "pure-Python _C stand-in"
print(f"fiber-det {fiber_det.__version__}; detectron2 {detectron2.__version__} ({kind}) at {detectron2.__path__[0]}")
EOF

inputs_hash >"$STAMP"
echo "==> [setup_env] done in $((SECONDS - START)) s; use .venv/bin/python"
