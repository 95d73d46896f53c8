// Command netcheck is the real-node test's pod: an HTTP server on :8080
// (both families) that answers who it is and, asked to, connects onward —
// so a test can drive pod-to-pod and pod-to-Service traffic from outside
// the pod.
//
//	GET /            → "<hostname>\n"
//	GET /healthz     → 200 (readiness probes)
//	GET /dial?addr=H:P → the body of http://H:P/ fetched from this pod, or
//	                     502 with the error
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", ":8080", "address to serve on")
	flag.Parse()
	host, _ := os.Hostname()
	// A new connection each time: a policy decides new connections, and a
	// kept-alive one from before it would hide it.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, host) })
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/dial", func(w http.ResponseWriter, r *http.Request) {
		resp, err := client.Get("http://" + r.URL.Query().Get("addr") + "/")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
