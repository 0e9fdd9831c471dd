#!/usr/bin/env bash
# Build the end-to-end test tools from their Go modules, once, into a cache outside the
# repository, and print the bin directory on the last line of output.
#
#   bash e2e/build-tools.sh            # build if needed; last line: the bin dir
#   E2E_BUILD_JOBS=1 E2E_BUILD_LANES=1 bash e2e/build-tools.sh   # gentler on a small machine
#
# The cache key is a hash of e2e/tools (go.mod, go.sum, our mains), of this script and of the
# provider's source, so a change of any pinned version builds a new set; an unchanged set is
# reused at once. The cache root is $VLLM_E2E_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/vllm-serving-e2e.
# GOMODCACHE and GOCACHE stay at the Go defaults (outside the repository).
set -euo pipefail

KUBE_VERSION=v1.34.4            # k8s.io/kubernetes; its staging modules at v0.34.4 (tools/kube/go.mod)
PULUMI_VERSION=v3.274.1         # github.com/pulumi/pulumi/pkg/v3 (the CLI) and sdk/v3
PROVIDER_VERSION=4.32.0         # pulumi-kubernetes: the release whose Python SDK requirements.txt pins
# The provider's source at that tag. The Go module proxy serves provider/v4 only at the 4.25.0
# commit, so it is built from source: the provider/ folder of the tag, from the archive kept beside
# the repository (../shared/vendor, see its README) when there is one, else from a clone of the tag.
PROVIDER_TAG=v4.32.0
PROVIDER_COMMIT=a03ff6ba58d2f1ea68319dda4b2c982119489c71
PROVIDER_ARCHIVE_SHA256=7374e647edddbe3b7f132a6268cde26ba0d6173950f51480cc435aa070432b92
# The schema the provider embeds comes from the 4.25.0 module (the release build generates it;
# neither the archive nor the tag carries it): see lane_pulumi.
PROVIDER_SCHEMA_MODULE=github.com/pulumi/pulumi-kubernetes/provider/v4@v4.0.0-20260115033456-f47bc2d6f199
# The Gateway API Inference Extension: its Endpoint Picker and body-based router (tools/epp/go.mod).
# v1.5.0 is the last release whose module holds cmd/epp and cmd/bbr; components/endpoint_picker.py
# pins the images of the same release.
GIE_VERSION=v1.5.0
# KEDA's operator and metrics API server (tools/keda/go.mod, with KEDA's own replace and exclude
# directives). v2.21.1 declares go 1.27.4 and needs a google/pprof pseudo-version the proxy
# refuses; v2.21.0 builds with the Go these tools use. schemas/crds/ holds this release's CRDs.
KEDA_VERSION=v2.21.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$here/tools"
jobs="${E2E_BUILD_JOBS:-$(nproc)}"
archive="${VLLM_E2E_PROVIDER_ARCHIVE:-$here/../../shared/vendor/pulumi-kubernetes-$PROVIDER_TAG-provider.tar.gz}"

key="$( { cat "${BASH_SOURCE[0]}"; go version; echo "provider source $PROVIDER_COMMIT $PROVIDER_ARCHIVE_SHA256"; \
          cd "$tools" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) | LC_ALL=C sort | xargs sha256sum; \
        } | sha256sum | cut -c1-16)"
root="${VLLM_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-serving-e2e}"
out="$root/$key"

if [[ -f "$out/.complete" ]]; then
    echo "tools: reusing $out ($(du -sh "$out" | cut -f1))" >&2
    echo "$out/bin"
    exit 0
fi

start=$SECONDS
mkdir -p "$root"
stage="$(mktemp -d "$root/.build.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/share/kwok/stages"

export GOFLAGS="-buildvcs=false -trimpath"
export GOMAXPROCS="$jobs"
build() {  # build <module dir> <ldflags> <packages...>
    local dir="$1" ldflags="$2"; shift 2
    local t=$SECONDS
    (cd "$dir" && go build -p "$jobs" -ldflags "-s -w $ldflags" -o "$stage/bin/" "$@")
    echo "tools: built $* in $((SECONDS - t))s" >&2
}
moddir() {  # moddir <module dir> <module path>: where the Go module cache holds that dependency
    (cd "$1" && go mod download -json "$2") | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'
}

# Two build lanes side by side, each `go build -p $jobs`: one large package compiling alone
# leaves a core idle, and measured here (2 cores, cold caches) two lanes took 27 minutes where
# one after the other took 37. E2E_BUILD_LANES=1 builds one module at a time.
lanes="${E2E_BUILD_LANES:-2}"
# The provider's source: provider/ of the tag, with tools/provider's go.mod and go.sum laid over it.
provider_source() {  # provider_source <dir>: prints the provider module's folder inside <dir>
    local dir="$1"
    if [[ -f "$archive" ]]; then
        echo "$PROVIDER_ARCHIVE_SHA256  $archive" | sha256sum --check --quiet >&2 \
            || { echo "tools: $archive is not the $PROVIDER_TAG archive" >&2; exit 1; }
        tar -xzf "$archive" -C "$dir" || exit 1
        echo "$dir/pulumi-kubernetes-$PROVIDER_TAG/provider"
    else
        git clone --quiet --depth 1 --branch "$PROVIDER_TAG" https://github.com/pulumi/pulumi-kubernetes "$dir/clone" >&2 || exit 1
        [[ "$(git -C "$dir/clone" rev-parse HEAD)" == "$PROVIDER_COMMIT" ]] || { echo "tools: $PROVIDER_TAG is not $PROVIDER_COMMIT" >&2; exit 1; }
        echo "$dir/clone/provider"
    fi
}
mkdir -p "$stage/provider-src"
provider_src="$(provider_source "$stage/provider-src")"
# The code generator is the only user of pulumi-language-dotnet, whose pinned version the proxy
# refuses; the provider does not need it.
rm -rf "$provider_src/cmd/pulumi-gen-kubernetes"
cp "$tools/provider/go.mod" "$tools/provider/go.sum" "$provider_src/"

for m in kube kwok pulumi epp keda; do (cd "$tools/$m" && go mod download) & done
(cd "$provider_src" && go mod download) &
wait

# Kubernetes control plane and etcd. Kubernetes reports its version from link-time variables;
# without them it says v0.0.0 and the Kubernetes provider refuses the cluster.
lane_kube() {
    local kv="" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        kv+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$(echo "${KUBE_VERSION#v}" | cut -d. -f1)"
        kv+=" -X $pkg.gitMinor=$(echo "${KUBE_VERSION#v}" | cut -d. -f2) -X $pkg.gitTreeState=clean"
    done
    build "$tools/kube" "$kv" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl ./etcd

    # kwok, with its Stage CRD and default stages (read from the module, not kept in this repository).
    build "$tools/kwok" "" sigs.k8s.io/kwok/cmd/kwok
    local kwok_dir
    kwok_dir="$(moddir "$tools/kwok" sigs.k8s.io/kwok)"
    cp "$kwok_dir/kustomize/crd/bases/kwok.x-k8s.io_stages.yaml" "$stage/share/kwok/"
    cp "$kwok_dir/kustomize/stage/node/fast/node-initialize.yaml" \
       "$kwok_dir/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
       "$kwok_dir/kustomize/stage/pod/fast/pod-ready.yaml" \
       "$kwok_dir/kustomize/stage/pod/fast/pod-complete.yaml" \
       "$kwok_dir/kustomize/stage/pod/fast/pod-delete.yaml" "$stage/share/kwok/stages/"

    # The Endpoint Picker, body-based routing, and the client that plays Envoy's part of ext_proc.
    local gie=sigs.k8s.io/gateway-api-inference-extension
    [[ "$(cd "$tools/epp" && go list -m -f '{{.Version}}' "$gie")" == "$GIE_VERSION" ]] \
        || { echo "tools: tools/epp/go.mod does not pin $gie@$GIE_VERSION" >&2; exit 1; }
    build "$tools/epp" "" "$gie/cmd/epp" "$gie/cmd/bbr" ./extproc-client

    # KEDA's operator and metrics API server (as keda-operator and keda-adapter), and every CRD of
    # the release (the operator watches them all; schemas/crds/ keeps the two the program renders).
    local keda=github.com/kedacore/keda/v2 keda_dir
    [[ "$(cd "$tools/keda" && go list -m -f '{{.Version}}' "$keda")" == "$KEDA_VERSION" ]] \
        || { echo "tools: tools/keda/go.mod does not pin $keda@$KEDA_VERSION" >&2; exit 1; }
    local t=$SECONDS
    mkdir -p "$stage/keda-bin" "$stage/share/keda/crds"
    (cd "$tools/keda" && go build -p "$jobs" -ldflags "-s -w -X $keda/version.Version=$KEDA_VERSION" \
        -o "$stage/keda-bin/" "$keda/cmd/operator" "$keda/cmd/adapter")
    mv "$stage/keda-bin/operator" "$stage/bin/keda-operator"
    mv "$stage/keda-bin/adapter" "$stage/bin/keda-adapter"
    rmdir "$stage/keda-bin"
    echo "tools: built $keda/cmd/operator $keda/cmd/adapter in $((SECONDS - t))s" >&2
    keda_dir="$(moddir "$tools/keda" "$keda")"
    cp "$keda_dir"/config/crd/bases/*.yaml "$stage/share/keda/crds/"
}

lane_pulumi() {
    # The Kubernetes provider: the tag's own main, which embeds the schema and the terraform
    # mapping that its release build generates. The schema is the one the 4.25.0 module carries,
    # with its version set as the release build sets it. The provider reads its schema only to
    # answer GetSchema and, in Read, to fill in an imported object's inputs (provider.go); the
    # program does neither (it adopts kept objects with Patch resources: components/kept.py). The
    # 4.25 schema lacks the types newer than it (resource.k8s.io/v1), which no case here imports.
    local schema_dir sdk_dir target="$provider_src/cmd/pulumi-resource-kubernetes"
    schema_dir="$(cd "$provider_src" && go mod download -json "$PROVIDER_SCHEMA_MODULE" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')/cmd/pulumi-resource-kubernetes"
    python3 - "$schema_dir" "$target" "$PROVIDER_VERSION" <<'EOF'
import json, sys
from pathlib import Path
source, target, version = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
schema = json.loads((source / "schema.json").read_text())
schema["version"] = version
(target / "schema-embed.json").write_text(json.dumps(schema, separators=(",", ":")))
mapping = json.loads((target / "terraform-mapping.json").read_text())
(target / "terraform-mapping-embed.json").write_text(json.dumps(mapping, separators=(",", ":")))
EOF
    build "$provider_src" "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$PROVIDER_VERSION" \
        ./cmd/pulumi-resource-kubernetes
    rm -rf "$stage/provider-src"

    # The Pulumi CLI and a Python language host (see tools/pulumi/pulumi-language-python/main.go),
    # with the language host's exec script from the sdk/v3 module.
    build "$tools/pulumi" "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION" \
        github.com/pulumi/pulumi/pkg/v3/cmd/pulumi ./pulumi-language-python
    sdk_dir="$(moddir "$tools/pulumi" github.com/pulumi/pulumi/sdk/v3)"
    install -m 0755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$stage/bin/"
}

if [[ "$lanes" -ge 2 ]]; then
    lane_kube & kube_pid=$!
    lane_pulumi & pulumi_pid=$!
    status=0
    wait "$kube_pid" || status=$?
    wait "$pulumi_pid" || status=$?
    [[ $status -eq 0 ]] || { echo "tools: build failed" >&2; exit "$status"; }
else
    lane_kube
    lane_pulumi
fi

"$stage/bin/kube-apiserver" --version >&2
"$stage/bin/pulumi" version >&2
printf '{"kubernetes": "%s", "pulumi": "%s", "pulumi-kubernetes": "%s", "gateway-api-inference-extension": "%s", "keda": "%s"}\n' \
    "$KUBE_VERSION" "$PULUMI_VERSION" "$PROVIDER_VERSION" "$GIE_VERSION" "$KEDA_VERSION" > "$stage/versions.json"

rm -rf "$out"
mv "$stage" "$out"
trap - EXIT
touch "$out/.complete"
echo "tools: built in $((SECONDS - start))s with $lanes lane(s) of -p $jobs; $out uses $(du -sh "$out" | cut -f1);" \
     "Go build cache $(du -sh "$(go env GOCACHE)" 2>/dev/null | cut -f1), module cache $(du -sh "$(go env GOMODCACHE)" 2>/dev/null | cut -f1)" >&2
echo "$out/bin"
