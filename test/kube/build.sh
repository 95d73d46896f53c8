#!/usr/bin/env bash
# Builds a real kube-apiserver and etcd from the Go module proxy into
# .tools/kube/<version>/, once per version (see shared notes on why the
# wrapper modules exist). Later calls with the binaries in place do nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
k8s_version=v1.37.2
out="$root/.tools/kube/$k8s_version"
mkdir -p "$out"
if [[ ! -x "$out/kube-apiserver" ]]; then
	echo "building kube-apiserver $k8s_version (a few minutes, once)"
	minor=${k8s_version#v1.}; minor=${minor%%.*}
	(cd "$root/test/kube" && CGO_ENABLED=0 go build -trimpath \
		-ldflags "-X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
		-o "$out/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
	mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
fi
if [[ ! -x "$out/etcd" ]]; then
	echo "building etcd"
	(cd "$root/test/kube/etcd" && CGO_ENABLED=0 go build -trimpath -o "$out/etcd.tmp" .)
	mv "$out/etcd.tmp" "$out/etcd"
fi
