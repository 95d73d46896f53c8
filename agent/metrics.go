package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/petrelnet/petrel/policy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// agentMetrics are Petrel's own; GoBGP's per-peer collector joins them.
type agentMetrics struct {
	reg              *prometheus.Registry
	routesInstalled  prometheus.Gauge
	fibSync          prometheus.Histogram
	policySync       prometheus.Histogram
	podAddresses     prometheus.Gauge
	routeConflicts   prometheus.Gauge
	nextHopsRejected prometheus.Gauge
	services         prometheus.Gauge
	draining         prometheus.Gauge
	drifts           *prometheus.CounterVec
	orphans          prometheus.Counter
	refused          *prometheus.GaugeVec
	notReady         atomic.Pointer[string] // why the node is not ready now; nil when it is
	lastSync         atomic.Int64           // unix nanoseconds of the last finished sync
}

func newAgentMetrics() *agentMetrics {
	buckets := prometheus.ExponentialBuckets(0.0005, 2, 16) // 0.5 ms .. 16 s
	starting := "the first sync has not finished"
	m := &agentMetrics{
		reg: prometheus.NewRegistry(),
		routesInstalled: prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_routes_installed",
			Help: "Kernel routes Petrel installed (protocol 61): learned routes and blackholes for the node's pod CIDRs."}),
		fibSync: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "petrel_fib_sync_seconds",
			Help: "Duration of kernel route syncs.", Buckets: buckets}),
		policySync: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "petrel_policy_sync_seconds",
			Help: "Duration of nftables syncs that changed something.", Buckets: buckets}),
		podAddresses: prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_ipam_allocated_addresses",
			Help: "Pod addresses allocated on this node (IPAM store)."}),
	}
	m.routeConflicts = prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_route_conflicts",
		Help: "Learned prefixes not installed because a route Petrel does not own (another protocol) holds them."})
	m.nextHopsRejected = prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_nexthops_rejected",
		Help: "Learned next hops refused: a local address, inside the cluster's pod CIDRs, unreachable, or reached only through Petrel's own routes."})
	m.services = prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_service_addresses_announced",
		Help: "Service addresses (LoadBalancer, external, cluster IP ranges) this node announces now."})
	m.draining = prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_draining",
		Help: "1 while the node drains (RFC 8326 GRACEFUL_SHUTDOWN on every announcement)."})
	m.notReady.Store(&starting)
	m.drifts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "petrel_drift_repaired_total",
		Help: "Changes made behind the agent's back to what it owns (route, table, chain, rule, set, conflist), repaired at once."}, []string{"object"})
	m.refused = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "petrel_policy_refused",
		Help: "1 for each NetworkPolicy the kernel refused: its pods are isolated with nothing allowed."}, []string{"namespace", "name"})
	m.orphans = prometheus.NewCounter(prometheus.CounterOpts{Name: "petrel_orphan_addresses_released_total",
		Help: "Pod addresses released because the pod's network namespace and veth were gone without a CNI DEL (a chained plugin failed DEL first)."})
	m.reg.MustRegister(m.drifts, m.refused, m.orphans)
	m.reg.MustRegister(m.routesInstalled, m.fibSync, m.policySync, m.podAddresses, m.routeConflicts, m.nextHopsRejected, m.services, m.draining,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// serve runs /metrics, /healthz (the loop finished a sync recently) and
// /readyz until ctx ends. It listens on addr, a loopback address by default.
// /readyz says what holds now: the last sync left routes, CNI config,
// policy and announcements in place, and check (the CNI config file is
// there) passes at the moment of the request.
func (m *agentMetrics) serve(ctx context.Context, addr string, staleAfter time.Duration, check func() error, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		// Before the first sync the agent is starting (waiting for the API
		// server is no reason to be restarted); after it, a sync must have
		// finished recently.
		if last := m.lastSync.Load(); last != 0 && time.Since(time.Unix(0, last)) > staleAfter {
			http.Error(w, "the sync loop has not finished a sync recently", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := m.readiness(check); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return nil
}

// readiness is nil when the node is ready now.
func (m *agentMetrics) readiness(check func() error) error {
	if why := m.notReady.Load(); why != nil {
		return errors.New(*why)
	}
	return check()
}

// setReady records the outcome of a sync for /readyz.
func (m *agentMetrics) setReady(why error) {
	if why == nil {
		m.notReady.Store(nil)
		return
	}
	s := why.Error()
	m.notReady.Store(&s)
}

// drift counts a change made behind the agent's back; the sync it pokes
// repairs it.
func (m *agentMetrics) drift(object string) { m.drifts.WithLabelValues(object).Inc() }

// setRefused makes petrel_policy_refused list exactly the refused policies.
func (m *agentMetrics) setRefused(refused []policy.Refusal) {
	m.refused.Reset()
	for _, r := range refused {
		m.refused.WithLabelValues(r.Namespace, r.Name).Set(1)
	}
}
