#!/usr/bin/env bash
# Installs what Petrel's tests and benchmarks need on a Debian machine, and
# nothing that is already there. Run as root; `make test` and `make bench`
# call it. Go tools are pinned and installed into .tools/bin of the checkout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

apt_packages=(
	iproute2                    # ip, for test namespaces
	iputils-ping                # real ICMP probes
	nftables                    # policy tests read rules back with nft
	iptables                    # the reference portmap plugin programs iptables
	containernetworking-plugins # reference ptp, host-local, portmap (/usr/lib/cni)
	frr                         # the top-of-rack router of the lab tests
	bird2                       # reference router of the route-install benchmark
	iperf3                      # throughput in the policy benchmark
	containerd                  # Debian's 1.6: imports and runs Petrel's image; the older real node
	runc                        # runs the real node's containers, with either containerd
)
missing=()
for p in "${apt_packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "setup: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# FRR's runtime directory: the lab topologies mount a private tmpfs on it
# inside each router, which needs the directory to exist (it is created when
# the frr service starts, which it never does here).
[[ -d /var/run/frr ]] || install -d -o frr -g frr -m 755 /var/run/frr

# cnitool: a real CNI runtime client, same version as the CNI library in go.mod.
cni_version=$(cd "$root" && go list -m -f '{{.Version}}' github.com/containernetworking/cni)
stamp="$root/.tools/cnitool.version"
if [[ ! -x "$root/.tools/bin/cnitool" || "$(cat "$stamp" 2>/dev/null)" != "$cni_version" ]]; then
	GOBIN="$root/.tools/bin" go install "github.com/containernetworking/cni/cnitool@$cni_version"
	echo "$cni_version" >"$stamp"
fi

# cnitool of CNI v1.1.2: the libcni that containerd 1.6 and 1.7 embed, the
# older runtime the conflist must work with.
old_cni=v1.1.2
if [[ ! -x "$root/.tools/bin/cnitool-$old_cni" ]]; then
	tmp=$(mktemp -d)
	GOBIN="$tmp" go install "github.com/containernetworking/cni/cnitool@$old_cni"
	install -m 755 "$tmp/cnitool" "$root/.tools/bin/cnitool-$old_cni"
	rm -rf "$tmp"
fi

# The stock gobgp CLI of the GoBGP major Petrel embeds, same version.
gobgp_version=$(cd "$root" && go list -m -f '{{.Version}}' github.com/osrg/gobgp/v4)
stamp="$root/.tools/gobgp.version"
if [[ ! -x "$root/.tools/bin/gobgp" || "$(cat "$stamp" 2>/dev/null)" != "$gobgp_version" ]]; then
	GOBIN="$root/.tools/bin" go install "github.com/osrg/gobgp/v4/cmd/gobgp@$gobgp_version"
	echo "$gobgp_version" >"$stamp"
fi

# containerd 2.x for the real-node test (test/node: its ContainerdV2), with
# its own ctr and runc shim; Debian's runc runs the containers.
ctrd_version=v2.2.9
ctrd_dir="$root/.tools/containerd-$ctrd_version"
if [[ ! -x "$ctrd_dir/containerd-shim-runc-v2" ]]; then
	echo "setup: building containerd $ctrd_version"
	tmp=$(mktemp -d)
	GOBIN="$tmp" CGO_ENABLED=0 go install "github.com/containerd/containerd/v2/cmd/containerd@$ctrd_version" \
		"github.com/containerd/containerd/v2/cmd/ctr@$ctrd_version" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$ctrd_version"
	mkdir -p "$ctrd_dir"
	install -m 755 "$tmp/containerd" "$tmp/ctr" "$ctrd_dir/"
	install -m 755 "$tmp/containerd-shim-runc-v2" "$ctrd_dir/" # last: marks the set complete
	rm -rf "$tmp"
fi

# A real kube-apiserver and etcd for the Kubernetes integration tests, and
# a node's kubelet, controllers, kube-proxy and kubectl for the real-node
# test, built from the Go module proxy once per version (minutes the first time).
"$root/test/kube/build.sh"
