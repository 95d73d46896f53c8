#!/usr/bin/env bash
# Builds a real kube-apiserver, etcd, and a node's Kubernetes binaries from
# the Go module proxy into .tools/kube/<version>/, once per version (see
# docs/testing.md on why the wrapper modules exist). Later calls with the
# binaries in place do nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
k8s_version=v1.37.2
out="$root/.tools/kube/$k8s_version"
mkdir -p "$out"
minor=${k8s_version#v1.}; minor=${minor%%.*}
ldflags="-X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
# The API server for every Kubernetes test; the rest for the real-node test
# (test/node): a kubelet, its controllers, kube-proxy and kubectl.
for cmd in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl kubelet; do
	[[ -x "$out/$cmd" ]] && continue
	echo "building $cmd $k8s_version (a few minutes, once)"
	(cd "$root/test/kube" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
	mv "$out/$cmd.tmp" "$out/$cmd"
done
if [[ ! -x "$out/etcd" ]]; then
	echo "building etcd"
	(cd "$root/test/kube/etcd" && CGO_ENABLED=0 go build -trimpath -o "$out/etcd.tmp" .)
	mv "$out/etcd.tmp" "$out/etcd"
fi
