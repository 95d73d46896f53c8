# Petrel. Three tiers: `make test-unit` (no root, seconds), `make test`
# (everything, as root: what CI runs), `make lint`. See docs/testing.md.
GO      ?= go
TOOLS   := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

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
test: deps
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

$(GOLANGCI):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	mv $(TOOLS)/golangci-lint $@

bench: deps build
	$(GO) run ./test/bench/cnibench -plugin $(CURDIR)/bin/petrel-cni
	$(GO) run ./test/bench/routebench -agent $(CURDIR)/bin/petrel-agent -sizes 10000,20000,100000
	$(GO) run ./test/bench/policybench -plugin $(CURDIR)/bin/petrel-cni
	$(GO) test -run XXX -bench . -benchtime 5x ./route/ ./policy/

# Petrel's image (needs a Docker engine, which this project's CI does not
# have), tagged as manifests/petrel.yaml names it (internal/version).
VERSION := $(shell sed -n 's/^const Version = "\(.*\)"/\1/p' internal/version/version.go)
IMAGE ?= ghcr.io/petrelnet/petrel:$(VERSION)
image:
	docker build -t $(IMAGE) .

clean:
	rm -rf bin .tools
