// Command petrel-lab runs containerlab topology files (kind: linux nodes)
// with network namespaces instead of containers:
//
//	petrel-lab deploy  -t FILE [-w DIR]
//	petrel-lab exec    -t FILE [-w DIR] NODE COMMAND...
//	petrel-lab destroy -t FILE [-w DIR]
//
// The work directory (default /var/run/petrel-lab) keeps each lab's state
// file, so destroy works even after deploy crashed.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/petrelnet/petrel/internal/clab"
)

func main() { os.Exit(run()) }

func run() int {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: petrel-lab deploy|exec|destroy -t FILE [-w DIR] [NODE COMMAND...]")
		return 2
	}
	verb := os.Args[1]
	fs := flag.NewFlagSet(verb, flag.ExitOnError)
	topo := fs.String("t", "", "topology file")
	work := fs.String("w", "/var/run/petrel-lab", "work directory for state and logs")
	fs.Parse(os.Args[2:])
	t, err := clab.Load(*topo)
	if err != nil {
		fmt.Fprintln(os.Stderr, "petrel-lab:", err)
		return 1
	}
	state := clab.StatePath(*work, t.Name)
	switch verb {
	case "deploy":
		if _, err := clab.Deploy(*topo, *work); err != nil {
			fmt.Fprintln(os.Stderr, "petrel-lab: deploy:", err)
			return 1
		}
		fmt.Printf("lab %s deployed; state %s\n", t.Name, state)
	case "exec":
		if fs.NArg() < 2 {
			fmt.Fprintln(os.Stderr, "petrel-lab: exec needs NODE COMMAND...")
			return 2
		}
		s, err := clab.ReadState(state)
		if err != nil {
			fmt.Fprintln(os.Stderr, "petrel-lab:", err)
			return 1
		}
		for _, n := range s.Nodes {
			if n.Name == fs.Arg(0) {
				out, err := clab.Exec(n, strings.Join(fs.Args()[1:], " "))
				fmt.Print(out)
				if err != nil {
					return 1
				}
				return 0
			}
		}
		fmt.Fprintf(os.Stderr, "petrel-lab: no node %q in lab %s\n", fs.Arg(0), t.Name)
		return 1
	case "destroy":
		if err := clab.Destroy(state); err != nil {
			fmt.Fprintln(os.Stderr, "petrel-lab: destroy:", err)
			return 1
		}
		fmt.Printf("lab %s destroyed\n", t.Name)
	default:
		fmt.Fprintf(os.Stderr, "petrel-lab: unknown command %q\n", verb)
		return 2
	}
	return 0
}
