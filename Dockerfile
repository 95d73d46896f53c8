# Petrel's image: petrel-agent, the CNI plugin and the reference portmap and
# loopback plugins (for the DaemonSet's init container to install into
# /opt/cni/bin), and the stock gobgp CLI of the same GoBGP version; all
# static, at the versions go.mod pins, on an empty base. `make image` builds
# this file with a Docker engine and the same files with
# internal/tools/mkimage without one.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# grpcnotrace: see the Makefile (30 MB less resident for the agent).
ENV CGO_ENABLED=0 GOFLAGS=-tags=grpcnotrace
RUN go build -trimpath -o /out/ \
      -ldflags="-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$(go list -m -f '{{.Version}}' github.com/containernetworking/plugins)" \
      ./cmd/petrel-agent \
      github.com/osrg/gobgp/v4/cmd/gobgp \
      github.com/containernetworking/plugins/plugins/meta/portmap \
      github.com/containernetworking/plugins/plugins/main/loopback \
 && go build -trimpath -ldflags="-s -w" -o /out/petrel ./cmd/petrel-cni

FROM scratch
COPY --from=build /out/petrel-agent /out/gobgp /usr/local/bin/
COPY --from=build /out/petrel /out/portmap /out/loopback /opt/cni/bin/
COPY manifests/rt_protos.conf /etc/iproute2/rt_protos.d/petrel.conf
ENV PATH=/usr/local/bin:/usr/bin:/bin
ENTRYPOINT ["/usr/local/bin/petrel-agent"]
