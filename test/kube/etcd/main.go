// Command etcd is etcd's own server, built from the Go module proxy for
// Petrel's integration tests (etcd's main module is not published there).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
