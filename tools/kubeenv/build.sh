#!/usr/bin/env bash
# Builds the real control plane the tests run against, with this machine's Go, from Go modules:
#   kube-apiserver  k8s.io/kubernetes (apiserver/go.mod: staging modules replaced by their v0.x)
#   istioctl        istio.io/istio    (istioctl/go.mod)
# etcd comes from Debian's etcd-server package (make setup installs it).
#
# Binaries are cached outside the checkout, keyed by a hash of the pins (go.mod, go.sum, this
# script): a fresh clone on a machine that built them before links them in seconds, and a pin
# change builds again. .cache/bin/ in the checkout links to the current build.
# First build on 2 cores, both at once: 13.5 minutes with the module cache warm (a minute or
# two more to download 1.5 GB of modules), ~4.5 GB of Go build cache, 215 MiB of binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# Go's own install folder, for shells whose PATH lacks it.
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "kubeenv: the go command is not on PATH (Go 1.26 is needed)" >&2; exit 1; }

pins="$(cat "$here"/apiserver/go.mod "$here"/apiserver/go.sum "$here"/istioctl/go.mod "$here"/istioctl/go.sum \
  "$here"/build.sh | sha256sum | cut -c1-16)"
cache="${KUBEENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/istio-canary/kubeenv}/$pins"
mkdir -p "$cache" "$root/.cache/bin"

k8s_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/apiserver/go.mod")"
k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
version_pkg=k8s.io/component-base/version

build() {  # name, module dir, package, ldflags
  local name="$1" dir="$2" pkg="$3" ldflags="$4"
  if [ -x "$cache/$name" ]; then return 0; fi
  echo "kubeenv: building $name ($pkg) into $cache; the first build takes 10-20 minutes"
  local start=$SECONDS
  (cd "$here/$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
    -o "$cache/$name.tmp" "$pkg") > "$cache/$name.build.log" 2>&1 \
    || { echo "kubeenv: building $name failed:" >&2; tail -30 "$cache/$name.build.log" >&2; return 1; }
  mv "$cache/$name.tmp" "$cache/$name"
  echo "kubeenv: built $name in $((SECONDS - start))s ($(du -m "$cache/$name" | cut -f1) MiB)"
}

build kube-apiserver apiserver k8s.io/kubernetes/cmd/kube-apiserver \
  "-s -w -X $version_pkg.gitVersion=$k8s_version -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$k8s_minor" &
apiserver_job=$!
build istioctl istioctl istio.io/istio/istioctl/cmd/istioctl "-s -w" &
istioctl_job=$!
status=0
wait "$apiserver_job" || status=1
wait "$istioctl_job" || status=1
[ "$status" = 0 ] || exit 1

for name in kube-apiserver istioctl; do ln -sfn "$cache/$name" "$root/.cache/bin/$name"; done

# Istio's own CRDs for the two kinds a release edits, cut out of the istio.io/istio module the
# istioctl build fetched: the real control plane installs them when no other copy is given.
istio_version="$(awk '$1 == "require" && $2 == "istio.io/istio" {print $3}' "$here/istioctl/go.mod")"
crd_all="$(cd "$here/istioctl" && go env GOMODCACHE)/istio.io/istio@$istio_version/manifests/charts/base/files/crd-all.gen.yaml"
mkdir -p "$root/.cache/crds"
for plural in virtualservices destinationrules; do
  awk -v want="  name: $plural.networking.istio.io" '
    /^---$/ { if (keep) printf "%s", doc; doc = ""; keep = 0; next }
    { doc = doc $0 "\n"; if ($0 == want) keep = 1 }
    END { if (keep) printf "%s", doc }' "$crd_all" > "$root/.cache/crds/$plural.crd.yaml"
  grep -q "kind: CustomResourceDefinition" "$root/.cache/crds/$plural.crd.yaml" \
    || { echo "kubeenv: no $plural CRD in $crd_all" >&2; exit 1; }
done
etcd_bin="$(command -v etcd || true)"
[ -n "$etcd_bin" ] && ln -sfn "$etcd_bin" "$root/.cache/bin/etcd"
echo "kubeenv: $("$root/.cache/bin/kube-apiserver" --version), istioctl from istio.io/istio $istio_version, $("$root/.cache/bin/etcd" --version | head -1)"
