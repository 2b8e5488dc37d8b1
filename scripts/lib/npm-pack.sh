# shellcheck shell=bash
# Packs one of the npm packages (bindings/node or bindings/wasm) the way it
# is published, with the package it depends on, @blipmq/core (bindings/js).
#
# In the repository each package depends on `"@blipmq/core": "file:../js"`,
# so that `npm ci` links the one shared source. A tarball must name a
# version instead: `pack_with_core` packs the package (npm applies its
# `files` list), sets that dependency to core's version in the packed
# package.json, and packs it again; core is packed beside it. Installing
# both tarballs together (`npm install CORE.tgz PACKAGE.tgz`) then needs no
# registry.
#
# Usage: read -r core_tgz package_tgz < <(pack_with_core PACKAGE_DIR DEST)
# (both absolute paths in DEST).
pack_with_core() {
  local dir="$1" dest="$2"
  local core_dir core_version core_tgz stage packed
  core_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../bindings/js" && pwd)"
  core_version="$(node -p "require('$core_dir/package.json').version")"
  mkdir -p "$dest"
  core_tgz="$(cd "$core_dir" && npm pack --silent --pack-destination "$dest")"
  stage="$(mktemp -d)"
  packed="$(cd "$dir" && npm pack --silent --pack-destination "$stage")"
  tar -xzf "$stage/$packed" -C "$stage"
  (cd "$stage/package" && npm pkg set "dependencies.@blipmq/core=$core_version")
  packed="$(cd "$stage/package" && npm pack --silent --pack-destination "$dest")"
  rm -rf "$stage"
  echo "$dest/$core_tgz $dest/$packed"
}
