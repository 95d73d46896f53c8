// Package version is the version of this tree: printed by the binaries,
// the tag of the image `make image` builds and manifests/petrel.yaml names.
package version

// Version is bumped with every release; the manifest's image tag follows it.
const Version = "v0.9.0"

// Image is the image the manifest runs.
const Image = "ghcr.io/petrelnet/petrel:" + Version
