#!/usr/bin/env sh
# Render the base and every overlay with `kubectl kustomize` and check every object
# against the Kubernetes schemas of KUBERNETES_VERSION with kubernetes-validate (strict:
# an unknown field is an error). Offline: both tools carry what they need.
#   deploy/k8s/check.sh [output directory for the rendered manifests]
# Needs kubectl (Debian: kubernetes-client) and kubernetes-validate (pip, the dev extras).
set -eu

KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.32.0}"
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"

if command -v kubernetes-validate >/dev/null 2>&1; then
  validate="kubernetes-validate"
else
  validate="${PYTHON:-python3} -m kubernetes_validate"
fi

status=0
for dir in "$here/base" "$here"/overlays/*/; do
  dir="${dir%/}"
  name="$(basename "$dir")"
  rendered="$out/$name.yaml"
  # kubectl warns on stderr about the deprecated fields kept for older kustomize.
  if ! kubectl kustomize "$dir" >"$rendered" 2>"$out/$name.stderr"; then
    echo "FAIL $name: kubectl kustomize failed:" >&2
    cat "$out/$name.stderr" >&2
    status=1
    continue
  fi
  objects="$(grep -c '^kind:' "$rendered" || true)"
  if $validate --kubernetes-version "$KUBERNETES_VERSION" --strict --quiet "$rendered"; then
    echo "ok   $name: $objects objects valid for Kubernetes $KUBERNETES_VERSION ($rendered)"
  else
    echo "FAIL $name: objects not valid for Kubernetes $KUBERNETES_VERSION ($rendered)" >&2
    status=1
  fi
done
exit $status
