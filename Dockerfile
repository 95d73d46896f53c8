# Petrel's image: petrel-agent, the CNI plugin (for the DaemonSet's init
# container to copy into /opt/cni/bin) and the stock gobgp CLI of the same
# GoBGP version. Static binaries on a distroless base. `make image`.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags="-s -w" -o /out/petrel-agent ./cmd/petrel-agent \
 && go build -trimpath -ldflags="-s -w" -o /out/petrel ./cmd/petrel-cni \
 && GOBIN=/out go install -trimpath -ldflags="-s -w" \
      "github.com/osrg/gobgp/v4/cmd/gobgp@$(go list -m -f '{{.Version}}' github.com/osrg/gobgp/v4)"

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/petrel-agent /out/gobgp /usr/local/bin/
COPY --from=build /out/petrel /opt/cni/bin/petrel
COPY manifests/rt_protos.conf /etc/iproute2/rt_protos.d/petrel.conf
ENTRYPOINT ["/usr/local/bin/petrel-agent"]
