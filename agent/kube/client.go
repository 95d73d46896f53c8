package kube

import (
	"context"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// The agent talks to the API server through REST clients that know only
// the built-in types it reads or writes. client-go's generated clientset
// (and its informer factory, leader election and event sink, which use it)
// registers every API group in one scheme, and the linker keeps every
// method of every type a scheme can decode: 13 MB of the agent's 56 MB
// binary, all of it resident on every node. Petrel's own resources go
// through the dynamic client. `make lint` keeps the clientset out.

// apiScheme holds the built-in types the agent decodes.
var apiScheme = runtime.NewScheme()

func init() {
	metav1.AddToGroupVersion(apiScheme, schema.GroupVersion{Version: "v1"})
	utilruntime.Must(corev1.AddToScheme(apiScheme))
	utilruntime.Must(discoveryv1.AddToScheme(apiScheme))
	utilruntime.Must(networkingv1.AddToScheme(apiScheme))
	utilruntime.Must(coordinationv1.AddToScheme(apiScheme))
}

var apiCodecs = serializer.NewCodecFactory(apiScheme)

// client is the agent's connection: one REST client per built-in group
// version, sharing one HTTP client, and the dynamic client.
type client struct {
	core, discovery, networking, coordination rest.Interface
	dyn                                       dynamic.Interface
}

// newClient connects as the clientset would: the same user agent, one
// transport, one rate limiter per group unless the config sets QPS.
func newClient(cfg *rest.Config) (*client, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if cfg.RateLimiter == nil && cfg.QPS > 0 {
		if cfg.Burst <= 0 {
			return nil, fmt.Errorf("kubernetes client: burst must be positive when QPS is set")
		}
		cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	}
	c := &client{}
	for _, g := range []struct {
		to   *rest.Interface
		gv   schema.GroupVersion
		path string
	}{
		{&c.core, corev1.SchemeGroupVersion, "/api"},
		{&c.discovery, discoveryv1.SchemeGroupVersion, "/apis"},
		{&c.networking, networkingv1.SchemeGroupVersion, "/apis"},
		{&c.coordination, coordinationv1.SchemeGroupVersion, "/apis"},
	} {
		gc := *cfg
		gc.GroupVersion, gc.APIPath = &g.gv, g.path
		gc.NegotiatedSerializer = apiCodecs.WithoutConversion()
		if *g.to, err = rest.RESTClientForConfigAndClient(&gc, hc); err != nil {
			return nil, fmt.Errorf("kubernetes client: %w", err)
		}
	}
	if c.dyn, err = dynamic.NewForConfigAndClient(cfg, hc); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}

// patchNodeStatus applies a strategic merge patch to a Node's status.
func (c *client) patchNodeStatus(ctx context.Context, node string, patch []byte) error {
	return c.core.Patch(types.StrategicMergePatchType).Resource("nodes").Name(node).
		SubResource("status").Body(patch).Do(ctx).Error()
}

// updateServiceStatus writes a Service's status.
func (c *client) updateServiceStatus(ctx context.Context, s *corev1.Service) error {
	return c.core.Put().Namespace(s.Namespace).Resource("services").Name(s.Name).
		SubResource("status").Body(s).Do(ctx).Error()
}

// eventSink writes the event recorder's Events (record.EventSink), as
// client-go's typed sink does.
type eventSink struct{ core rest.Interface }

func (s eventSink) Create(e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.core.Post().Namespace(e.Namespace).Resource("events").Body(e).
		Do(context.Background()).Into(out)
	return out, err
}

func (s eventSink) Update(e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.core.Put().Namespace(e.Namespace).Resource("events").Name(e.Name).Body(e).
		Do(context.Background()).Into(out)
	return out, err
}

func (s eventSink) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.core.Patch(types.StrategicMergePatchType).Namespace(e.Namespace).Resource("events").Name(e.Name).
		Body(data).Do(context.Background()).Into(out)
	return out, err
}
