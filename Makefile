# Petrel — see README.md. Kernel tests need root.
GO      ?= go
TOOLS   := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

.PHONY: all build deps test bench demo image clean

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

# Every test, the kernel ones included (as root).
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

bench: deps build
	$(GO) run ./test/bench/cnibench -plugin $(CURDIR)/bin/petrel-cni
	$(GO) run ./test/bench/routebench -agent $(CURDIR)/bin/petrel-agent -sizes 10000,20000,100000
	$(GO) run ./test/bench/policybench -plugin $(CURDIR)/bin/petrel-cni
	$(GO) test -run XXX -bench . -benchtime 5x ./bgp/fib/ ./policy/

# Petrel's image (needs a Docker engine, which this project's CI does not have).
IMAGE ?= petrel:latest
image:
	docker build -t $(IMAGE) .

clean:
	rm -rf bin .tools
