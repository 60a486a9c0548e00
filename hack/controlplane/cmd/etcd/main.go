// etcd, built from go.etcd.io/etcd/server/v3 at the version the pinned Kubernetes release
// itself requires (its go.mod lists the server module), so both agree on the storage API.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
