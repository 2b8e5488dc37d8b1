#!/usr/bin/env bash
# The Rust crates we publish, packed as the registry would receive them
# (docs/releasing.md), in seconds: nothing is built (--no-verify) and nothing
# is uploaded. Fails when
# - a workspace member is neither in PUBLISHED nor `publish = false`;
# - the versions disagree: [workspace.package], the path dependencies in
#   [workspace.dependencies], and the npm and Maven packages;
# - cargo refuses to pack a crate (a path dependency without a version, a
#   missing readme, ...);
# - a package lacks its README.md or LICENSE, or holds tests, benches,
#   examples or build output;
# - client-rs/README.md's example is no longer examples/rust's code.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

# In the order they must be published: each after what it depends on,
# dev-dependencies included (the client's doctests run a broker).
PUBLISHED=(blipmq-protocol blipmq-broker blipmq blipmq-cli)

python3 - "${PUBLISHED[@]}" <<'EOF'
import json, re, subprocess, sys, tomllib
from pathlib import Path

metadata = json.loads(subprocess.run(
    ["cargo", "metadata", "--no-deps", "--format-version", "1"],
    check=True, capture_output=True, text=True).stdout)
published = set(sys.argv[1:])
problems = []

members = {p["name"]: p for p in metadata["packages"]}
for name, package in sorted(members.items()):
    if name in published:
        if package["publish"] == []:
            problems.append(f"{name} is in PUBLISHED but has publish = false")
    elif package["publish"] != []:
        problems.append(f"{name}: add `publish = false`, or add it to PUBLISHED in scripts/check-crates.sh")

root = tomllib.loads(Path("Cargo.toml").read_text())
version = root["workspace"]["package"]["version"]
for name, dep in root["workspace"]["dependencies"].items():
    if isinstance(dep, dict) and "path" in dep and name in published:
        if dep.get("version") != version:
            problems.append(f"Cargo.toml: [workspace.dependencies] {name} has version "
                            f"{dep.get('version')!r}, the workspace {version!r}")
for path in ["bindings/node/package.json", "bindings/wasm/package.json", "bindings/js/package.json"]:
    found = json.loads(Path(path).read_text())["version"]
    if found != version:
        problems.append(f"{path}: version {found}, the workspace {version}")
pom = Path("bindings/uniffi/kotlin/pom.xml").read_text()
# The project's own <version>: the first one after its <artifactId>.
found = re.search(r"<artifactId>blipmq</artifactId>\s*<version>([^<]+)</version>", pom)
if not found or found.group(1) != version:
    problems.append(f"bindings/uniffi/kotlin/pom.xml: version {found and found.group(1)}, the workspace {version}")

# Every line of the README's example, but its imports, is a line of the quickstart.
readme = Path("client-rs/README.md").read_text()
example = re.search(r"```rust\n(.*?)```", readme, re.S).group(1)
quickstart = {line.strip() for line in Path("examples/rust/src/main.rs").read_text().splitlines()}
for line in example.splitlines():
    if line.strip() and not line.startswith("use ") and line.strip() not in quickstart:
        problems.append(f"client-rs/README.md: not in examples/rust/src/main.rs: {line.strip()}")

for problem in problems:
    print(f"check-crates: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

packages=()
for name in "${PUBLISHED[@]}"; do packages+=(-p "$name"); done

# The tests and benches are left out of the packages on purpose (they need
# the workspace), so cargo's notes that it ignores them are only noise.
if ! output="$(cargo package "${packages[@]}" --no-verify --allow-dirty 2>&1)"; then
  printf '%s\n' "$output" >&2
  exit 1
fi
grep -v '^warning: ignoring \(test\|benchmark\|example\) ' <<<"$output" || true

status=0
for name in "${PUBLISHED[@]}"; do
  files="$(cargo package -p "$name" --list --allow-dirty 2>/dev/null)"
  for needed in README.md LICENSE Cargo.toml; do
    if ! grep -qx "$needed" <<<"$files"; then
      echo "check-crates: $name's package has no $needed" >&2
      status=1
    fi
  done
  if unwanted="$(grep -E '^(tests|benches|examples|target)/|\.crate$' <<<"$files")"; then
    echo "check-crates: $name's package holds files it does not need:" >&2
    sed 's/^/  /' <<<"$unwanted" >&2
    status=1
  fi
done
[[ $status -eq 0 ]] && echo "check-crates: ${PUBLISHED[*]} pack cleanly"
exit $status
