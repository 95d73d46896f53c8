// Command mkimage builds Petrel's container image without a Docker engine:
// the files the Dockerfile copies, in one layer on an empty base, written
// as an OCI image-layout archive that `ctr images import` and `docker load`
// read, named as the manifest names the image. `make image` runs it.
//
//	mkimage -tag ghcr.io/petrelnet/petrel:v0.9.0 -out bin/petrel-image.tar \
//	  -entrypoint /usr/local/bin/petrel-agent \
//	  -add /usr/local/bin/petrel-agent=bin/image/petrel-agent:0755 ...
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type file struct {
	dst, src string
	mode     int64
}

type files []file

func (f *files) String() string { return fmt.Sprint(*f) }

// Set parses dst=src[:mode], mode in octal (0644 when absent).
func (f *files) Set(v string) error {
	dst, src, ok := strings.Cut(v, "=")
	if !ok || !path.IsAbs(dst) {
		return fmt.Errorf("-add %q: want /path/in/image=local/file[:mode]", v)
	}
	mode := int64(0o644)
	if s, m, ok := strings.Cut(src, ":"); ok {
		n, err := strconv.ParseInt(m, 8, 32)
		if err != nil {
			return fmt.Errorf("-add %q: mode %q is not octal", v, m)
		}
		src, mode = s, n
	}
	*f = append(*f, file{dst: dst, src: src, mode: mode})
	return nil
}

func main() {
	var add files
	tag := flag.String("tag", "", "the image's name, as the manifest names it (required)")
	out := flag.String("out", "bin/petrel-image.tar", "the OCI archive to write")
	entrypoint := flag.String("entrypoint", "", "the image's entrypoint")
	flag.Var(&add, "add", "a file: /path/in/image=local/file[:octal mode] (repeat)")
	flag.Parse()
	if err := build(*tag, *out, *entrypoint, add); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func build(tag, out, entrypoint string, add files) error {
	ref, err := name.NewTag(tag, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("-tag: %w", err)
	}
	if len(add) == 0 {
		return errors.New("-add: no files")
	}
	layerTar, err := layerOf(add)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()} // reproducible
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	if entrypoint != "" {
		cf.Config.Entrypoint = []string{entrypoint}
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	return writeArchive(out, ref, img)
}

// layerOf is the image's one layer: the files with their parent
// directories, in a fixed order with fixed times, so the same inputs give
// the same digest.
func layerOf(add files) ([]byte, error) {
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	slices.SortFunc(add, func(a, b file) int { return strings.Compare(a.dst, b.dst) })
	epoch := time.Unix(0, 0)
	for _, f := range add {
		var parents []string
		for d := path.Dir(f.dst); d != "/"; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if !dirs[d] {
				dirs[d] = true
				if err := w.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: epoch}); err != nil {
					return nil, err
				}
			}
		}
		data, err := os.ReadFile(f.src)
		if err != nil {
			return nil, err
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.dst, "/"), Mode: f.mode, Size: int64(len(data)), ModTime: epoch}
		if err := w.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), w.Close()
}

// writeArchive writes img as an OCI image layout, tarred: index.json
// names it as containerd and Docker look it up (io.containerd.image.name,
// the full name; org.opencontainers.image.ref.name, the tag).
func writeArchive(out string, ref name.Tag, img v1.Image) error {
	dir, err := os.MkdirTemp(filepath.Dir(out), ".mkimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	err = p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          ref.Name(),
		"org.opencontainers.image.ref.name": ref.TagStr(),
	}))
	if err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := tarDir(dir, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}

// tarDir writes the layout directory as a tar archive (the form of an OCI
// archive), files in a fixed order.
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	w := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name, hdr.ModTime = filepath.ToSlash(rel), time.Unix(0, 0)
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := w.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(w, src)
		return err
	})
	if err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return f.Close()
}
