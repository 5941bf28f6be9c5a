#!/usr/bin/env bash
# The consumer test (`npm run test:consumer`, a step of .ci/run): mire as a new
# user gets it. Builds and packs every publishable package (checking the
# tarballs), then, in a scratch app in a temporary folder outside the
# workspace:
#   - installs the @mire/core and @mire/pg tarballs and the peers from the
#     registry, and checks that no @effect/cluster or @effect/rpc came along;
#   - type-checks the README quickstart (extracted from README.md) and a
#     program using @mire/core/testing with nodenext and strict consumer flags,
#     skipLibCheck off; runs both with plain node, the quickstart twice, on a
#     fresh database (DATABASE_URL's server, else an embedded PostgreSQL);
#   - installs @mire/cli and runs `mire migrate`, `mire status --json` (parsed
#     and checked) and `mire migrate --dry-run`.
# `--no-build` reuses the tarballs in .pack/. `KEEP=1` keeps the scratch app.
set -Eeuo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
trap 'printf "CONSUMER TEST FAILED: line %d exited %d\n" "$LINENO" "$?" >&2' ERR
fail() { printf 'CONSUMER TEST FAILED: %s\n' "$*" >&2; exit 1; }
step() { printf '\n--- consumer: %s ---\n' "$*"; }

if [[ "${1:-}" != "--no-build" ]]; then
  step "build and pack"
  npm run -s pack --prefix "$root"
else
  node "$root/scripts/check-tarballs.mjs" "$root/.pack"
fi
version=$(node -p 'require(process.argv[1]).version' "$root/packages/core/package.json")
core="$root/.pack/mire-core-$version.tgz" pg="$root/.pack/mire-pg-$version.tgz" cli="$root/.pack/mire-cli-$version.tgz"
for t in "$core" "$pg" "$cli"; do [[ -f "$t" ]] || fail "no tarball $t"; done

app=$(mktemp -d "${TMPDIR:-/tmp}/mire-consumer.XXXXXX")
case "$app" in "$root"/*) fail "the scratch app must be outside the workspace" ;; esac
if [[ "${KEEP:-}" == 1 ]]; then echo "scratch app: $app"; else trap 'rm -rf "$app"' EXIT; fi

cd "$app"
cat > package.json <<'JSON'
{ "name": "mire-consumer", "version": "0.0.0", "private": true, "type": "module" }
JSON
cp "$root/scripts/consumer/tsconfig.json" tsconfig.json
mkdir src
cp "$root/scripts/consumer/testing.ts" "$root/scripts/consumer/projections.ts" src/
# The quickstart exactly as README.md shows it: the ```ts block after <!-- consumer-test: quickstart.ts -->.
node -e '
  const [readme, out] = process.argv.slice(1)
  const text = require("node:fs").readFileSync(readme, "utf8")
  const match = /<!-- consumer-test: quickstart\.ts -->\s*```ts\n([\s\S]*?)\n```/.exec(text)
  if (match === null) { console.error("README.md has no marked quickstart block"); process.exit(1) }
  require("node:fs").writeFileSync(out, match[1] + "\n")
' "$root/README.md" src/quickstart.ts

npm_i() { timeout 600 npm install --no-audit --no-fund --loglevel=error "$@"; }

step "install @mire/core, @mire/pg and the peers"
npm_i "$core" "$pg" \
  "effect@^3.22.4" "@effect/sql@^0.52.1" "@effect/sql-pg@^0.53.0" "@effect/platform@^0.97.2" "@effect/experimental@^0.61.1" \
  "typescript@~5.9.3" "@types/node@^20.19.0" "@types/pg@^8.15.0"
heavy=$(npm ls --all --parseable @effect/cluster @effect/rpc 2>/dev/null || true)
[[ -z "$heavy" ]] || fail "a library user gets the CLI's weight: $heavy"
echo "no @effect/cluster, no @effect/rpc"
copies=$(npm ls --all --parseable effect | sort -u | wc -l)
[[ "$copies" -eq 1 ]] || fail "$copies copies of effect installed"
echo "one copy of effect"

step "type-check (nodenext, strict, exactOptionalPropertyTypes, noUncheckedIndexedAccess, noPropertyAccessFromIndexSignature, skipLibCheck off)"
npx tsc -p tsconfig.json
echo "type-check passed"

step "run with node: the test kit"
out=$(node dist/testing.js)
echo "$out"
grep -q '^test kit: balance 40 at version 2, projected total 15$' <<<"$out" || fail "the test kit program printed something else"

run_app() {
  step "mire CLI on the empty database: migrate --dry-run, migrate"
  npm_i "$cli"
  npx --no-install mire --help >/dev/null
  local out
  out=$(npx --no-install mire migrate --dry-run)
  grep -q "CREATE TABLE" <<<"$out" || fail "mire migrate --dry-run printed no SQL: $out"
  echo "mire migrate --dry-run: $(wc -l <<<"$out") lines of SQL"
  npx --no-install mire migrate
  out=$(npx --no-install mire migrate --dry-run)
  echo "then mire migrate --dry-run: $out"
  ! grep -q "CREATE TABLE" <<<"$out" || fail "mire migrate left migrations pending"

  step "run with node: the quickstart, twice"
  local first second
  first=$(node dist/quickstart.js)
  echo "$first"
  second=$(node dist/quickstart.js)
  echo "$second"
  [[ "$first" =~ ^Ada:\ balance\ ([0-9]+),\ version\ ([0-9]+)$ ]] || fail "quickstart printed '$first'"
  local b1=${BASH_REMATCH[1]} v1=${BASH_REMATCH[2]}
  [[ "$second" =~ ^Ada:\ balance\ ([0-9]+),\ version\ ([0-9]+)$ ]] || fail "quickstart's second run printed '$second'"
  [[ "${BASH_REMATCH[1]}" -eq $((b1 + 100)) && "${BASH_REMATCH[2]}" -eq $((v1 + 1)) ]] ||
    fail "the second run did not deposit once more"

  step "run with node: two projections on PostgreSQL, caught up"
  out=$(node dist/projections.js)
  echo "$out"
  [[ "$out" == "projections caught up: 1 opened, $((b1 + 100)) deposited" ]] || fail "projections printed '$out'"

  step "mire status, mire status --json, and a wrong database"
  npx --no-install mire status
  npx --no-install mire status --json > status.json
  node -e '
    const s = JSON.parse(require("node:fs").readFileSync("status.json", "utf8"))
    const digits = (v) => typeof v === "string" && /^\d+$/.test(v)
    const ok = s !== null && typeof s === "object" && digits(s.head?.transactionId) && digits(s.head?.position) &&
      Array.isArray(s.subscriptions) && "oldestTransaction" in s &&
      s.subscriptions.every((x) => typeof x.subscriptionId === "string" && digits(x.lag) && digits(x.fenceToken) &&
        "leaseHolder" in x && "leasedUntil" in x && digits(x.checkpoint?.transactionId) && digits(x.checkpoint?.position)) &&
      JSON.stringify(s.subscriptions.map((x) => [x.subscriptionId, x.lag])) ===
        JSON.stringify([["consumer-deposits", "0"], ["consumer-openings", "0"]])
    if (!ok) { console.error("unexpected mire status --json:\n" + JSON.stringify(s, null, 2)); process.exit(1) }
    console.log(`mire status --json: head ${s.head.transactionId}/${s.head.position}, ${s.subscriptions.length} subscription(s)`)
  '
  # A wrong database: one line on stderr, a non-zero exit.
  local bad
  if bad=$(npx --no-install mire status --url "${DATABASE_URL%/*}/mire_no_such_db" 2>&1); then fail "mire status on a missing database exited 0"; fi
  [[ $(wc -l <<<"$bad") -eq 1 ]] || fail "mire status on a missing database printed more than one line: $bad"
  echo "missing database: $bad"
}
export cli
export -f run_app npm_i fail step
step "a fresh database"
(cd "$root" && node --conditions=@mire/source --import tsx scripts/with-database.ts bash -c "set -Eeuo pipefail; cd '$app' && run_app")
printf '\nconsumer test passed\n'
