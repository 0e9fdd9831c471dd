// Command etcd runs the etcd server from go.etcd.io/etcd/server/v3, the library the
// upstream etcd binary wraps.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
