// Command coredns is the testbed's cluster DNS: CoreDNS with only the plugins the testbed's
// Corefile uses (devtools/lbtrain_dev/testbed/dns.py writes it).
//
// The upstream binary links every plugin, cloud back ends included (Route 53, Azure DNS, Google
// Cloud DNS, etcd, ...); this main imports the server (coremain) and the few plugins the testbed
// needs, so the cold build stays small. The plugin order comes from the server's directive list,
// which is the upstream one whatever plugins are linked.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// The plugins the testbed's Corefile names; each registers itself in init. No cache: the
	// kubernetes plugin answers from its informers' memory, and a cached NXDOMAIN for a pod not
	// yet running would outlive the pod's start. No forward: the testbed has no upstream.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The directive list is upstream's; referencing it keeps the import explicit (the server orders
// the linked plugins by it).
var _ = dnsserver.Directives

func main() {
	coremain.Run()
}
