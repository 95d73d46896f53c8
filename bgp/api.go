package bgp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The GoBGP API can add and delete neighbors, replace the import guard and
// read every peer's configuration. By default it listens on a unix socket
// that only root reaches: the socket is made mode 0600, in a directory of
// mode 0700 when Petrel creates it. Whatever the listener, no answer ever carries a session
// password.

// prepareSocket readies a unix socket path for GoBGP's listener: the
// directory exists with mode 0700, and a socket left by a previous run is
// removed (GoBGP cannot listen over it). Anything else at the path is an
// error, never deleted.
func prepareSocket(addr string) error {
	path, ok := strings.CutPrefix(addr, "unix://")
	if !ok {
		return nil
	}
	// A directory Petrel creates is root's alone; one that exists is not
	// Petrel's to change (it may be /run): the socket's own mode guards it.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("grpcAddress %s: %w", addr, err)
	}
	switch fi, err := os.Lstat(path); {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("grpcAddress %s: %w", addr, err)
	case fi.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("grpcAddress %s: %s exists and is not a socket", addr, path)
	}
	return os.Remove(path)
}

// lockSocket makes the socket mode 0600 once GoBGP has created it (it
// listens from a goroutine of its own). The directory already keeps other
// users out; this is the second lock.
func lockSocket(addr string) error {
	path, ok := strings.CutPrefix(addr, "unix://")
	if !ok {
		return nil
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if err := os.Chmod(path, 0o600); err == nil {
			return nil
		}
	}
	return fmt.Errorf("grpcAddress %s: the API socket did not appear", addr)
}

// withoutPasswords is a gRPC interceptor that clears every auth_password
// field of the messages the API sends (ListPeer, ListPeerGroup, watch
// events): a password is configured, never read back.
func withoutPasswords() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			return handler(srv, scrubbingStream{ss})
		}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			resp, err := handler(ctx, req)
			if pm, ok := resp.(proto.Message); ok && err == nil {
				pm = proto.Clone(pm)
				scrub(pm.ProtoReflect())
				resp = pm
			}
			return resp, err
		}),
	}
}

type scrubbingStream struct{ grpc.ServerStream }

func (s scrubbingStream) SendMsg(m any) error {
	if pm, ok := m.(proto.Message); ok {
		pm = proto.Clone(pm)
		scrub(pm.ProtoReflect())
		m = pm
	}
	return s.ServerStream.SendMsg(m)
}

// scrub clears auth_password fields anywhere in m.
func scrub(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Name() == "auth_password":
			m.Clear(fd)
		case fd.Message() == nil:
		case fd.IsList():
			for i := range v.List().Len() {
				scrub(v.List().Get(i).Message())
			}
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapValue().Message() != nil {
					scrub(mv.Message())
				}
				return true
			})
		default:
			scrub(v.Message())
		}
		return true
	})
}
