// Command faildel is a chained CNI plugin for tests: ADD passes the
// previous result through, DEL always fails, as an old portmap does when it
// refuses the list's version. libcni runs DEL last plugin first and stops
// at the first failure, so the plugins before it never see the DEL.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

func main() {
	var conf struct {
		CNIVersion string          `json:"cniVersion"`
		PrevResult json.RawMessage `json:"prevResult"`
	}
	in, _ := io.ReadAll(os.Stdin)
	json.Unmarshal(in, &conf)
	switch os.Getenv("CNI_COMMAND") {
	case "ADD":
		os.Stdout.Write(conf.PrevResult)
	case "VERSION":
		fmt.Printf(`{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}`)
	case "DEL":
		fmt.Printf(`{"cniVersion":%q,"code":999,"msg":"faildel: DEL always fails"}`, conf.CNIVersion)
		os.Exit(1)
	}
}
