# Petrel. Three tiers: `make test-unit` (no root, seconds), `make test`
# (everything, as root: what CI runs), `make lint`. See docs/testing.md.
GO      ?= go
TOOLS   := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

# grpcnotrace leaves out gRPC's golang.org/x/net/trace, whose debug pages
# execute templates: a binary that can do that keeps every method of every
# type, and petrel-agent maps 70 MB of code instead of 40 (30 MB more
# resident on every node). Every go command here builds with it; `make lint`
# checks that the agent links no x/net/trace.
export GOFLAGS := -tags=grpcnotrace

GOLANGCI_VERSION := v2.15.0
GOLANGCI         := $(TOOLS)/golangci-lint-$(GOLANGCI_VERSION)

.PHONY: all build deps test test-unit lint bench demo image clean

all: build

build:
	$(GO) build -trimpath -o bin/ ./cmd/...

# Installs test dependencies (Debian packages, pinned Go tools).
deps:
	./test/setup.sh

# The lab: an FRR ToR, three nodes running petrel-agent, pods, routes, pings
# and a NetworkPolicy, with a report. PETREL_DEMO_KEEP=1 leaves it running.
demo: deps build
	$(GO) run ./test/lab/demo -agent $(CURDIR)/bin/petrel-agent -cni $(CURDIR)/bin/petrel-cni

# Pure logic and in-process GoBGP speakers: no root, no apt, no network
# namespaces (-short skips every kernel, lab and API-server test).
test-unit:
	$(GO) test -short -race -count=1 ./...

# Every test, the kernel ones included (as root): the unit tier with the
# race detector, then everything.
test: deps image
	$(GO) vet ./...
	$(GO) test -short -race -count=1 ./...
	$(GO) test -count=1 -timeout 25m ./...

# gofmt, go vet, and golangci-lint's depguard rules (.golangci.yml): one home
# per heavy dependency, no testing package in a product binary.
lint: $(GOLANGCI)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOLANGCI) run ./...
	@if $(GO) list -deps ./cmd/... | grep -qx testing; then echo "a binary in cmd/ links the testing package"; exit 1; fi
	@if $(GO) list -deps ./cmd/... | grep -qx golang.org/x/net/trace; then echo "a binary in cmd/ links golang.org/x/net/trace (build with -tags grpcnotrace)"; exit 1; fi
	@if $(GO) list -deps ./cmd/... | grep -qx k8s.io/client-go/kubernetes/scheme; then echo "a binary in cmd/ links client-go's clientset scheme (every API group; agent/kube/client.go)"; exit 1; fi

$(GOLANGCI):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	mv $(TOOLS)/golangci-lint $@

bench: deps build
	$(GO) run ./test/bench/cnibench -plugin $(CURDIR)/bin/petrel-cni
	$(GO) run ./test/bench/routebench -agent $(CURDIR)/bin/petrel-agent -sizes 10000,20000,100000
	$(GO) run ./test/bench/routebench -agent $(CURDIR)/bin/petrel-agent -sizes 10000,20000 -duts petrel,frr -one-per-update
	$(GO) run ./test/bench/policybench -plugin $(CURDIR)/bin/petrel-cni
	$(GO) run ./test/bench/routebench -agent $(CURDIR)/bin/petrel-agent -sizes 20000 -duts petrel -pods 10000
	$(GO) run ./test/bench/clusterbench -agent $(CURDIR)/bin/petrel-agent -nodes 100,1000
	$(GO) test -run XXX -bench . -benchtime 5x ./route/ ./policy/
	$(GO) test -run XXX -bench . -benchtime 1x ./agent/kube/

# Petrel's image, tagged as manifests/petrel.yaml names it (internal/version),
# as an OCI archive for `ctr -n k8s.io images import` or `docker load`. With
# a Docker engine it is built from the Dockerfile; without one (this
# project's CI) internal/tools/mkimage builds the same files into the same
# layout. The reference plugins (portmap, loopback) and the gobgp CLI come
# from the versions go.mod pins (its tool lines).
VERSION := $(shell sed -n 's/^const Version = "\(.*\)"/\1/p' internal/version/version.go)
IMAGE ?= ghcr.io/petrelnet/petrel:$(VERSION)
IMAGE_TOOLS := github.com/osrg/gobgp/v4/cmd/gobgp github.com/containernetworking/plugins/plugins/meta/portmap github.com/containernetworking/plugins/plugins/main/loopback
# The reference plugins print their release (and a node's installer reads it).
IMAGE_LDFLAGS = -s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$(shell $(GO) list -m -f '{{.Version}}' github.com/containernetworking/plugins)
image:
	@if docker info >/dev/null 2>&1; then \
		docker build -t $(IMAGE) . && docker save -o bin/petrel-image.tar $(IMAGE); \
	else \
		rm -rf bin/image && mkdir -p bin/image && \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags="$(IMAGE_LDFLAGS)" -o bin/image/ ./cmd/petrel-agent $(IMAGE_TOOLS) && \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags="$(IMAGE_LDFLAGS)" -o bin/image/petrel ./cmd/petrel-cni && \
		$(GO) run ./internal/tools/mkimage -tag $(IMAGE) -out bin/petrel-image.tar -entrypoint /usr/local/bin/petrel-agent \
			-add /usr/local/bin/petrel-agent=bin/image/petrel-agent:0755 -add /usr/local/bin/gobgp=bin/image/gobgp:0755 \
			-add /opt/cni/bin/petrel=bin/image/petrel:0755 -add /opt/cni/bin/portmap=bin/image/portmap:0755 \
			-add /opt/cni/bin/loopback=bin/image/loopback:0755 \
			-add /etc/iproute2/rt_protos.d/petrel.conf=manifests/rt_protos.conf:0644 && \
		echo "image $(IMAGE): bin/petrel-image.tar"; \
	fi

clean:
	rm -rf bin .tools
