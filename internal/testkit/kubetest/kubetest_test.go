package kubetest

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
)

func (s *Server) do(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// The real API server validates, stores in etcd, and survives its own
// restart with the data intact: what the agent's tests rely on.
func TestAPIServer(t *testing.T) {
	s := Start(t)
	node := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": "node1"},
		"spec": map[string]any{"podCIDRs": []string{"10.244.1.0/24", "fd00:10:244:1::/64"}}}
	if code, body := s.do(t, "POST", "/api/v1/nodes", node); code != 201 {
		t.Fatalf("create node: %d %v", code, body)
	}
	bad := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": "node2"},
		"spec": map[string]any{"podCIDRs": []string{"not-a-cidr"}}}
	if code, _ := s.do(t, "POST", "/api/v1/nodes", bad); code != 422 {
		t.Fatalf("an invalid podCIDR was accepted (%d): this is not a validating API server", code)
	}
	s.StopAPI()
	if err := s.StartAPI(); err != nil {
		t.Fatal(err)
	}
	code, got := s.do(t, "GET", "/api/v1/nodes/node1", nil)
	if code != 200 || fmt.Sprint(got["spec"].(map[string]any)["podCIDRs"]) != "[10.244.1.0/24 fd00:10:244:1::/64]" {
		t.Fatalf("node after an API server restart: %d %v", code, got)
	}
	code, ver := s.do(t, "GET", "/version", nil)
	if code != 200 || ver["gitVersion"] != Version {
		t.Fatalf("/version: %d %v", code, ver)
	}
}
