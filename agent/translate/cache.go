package translate

import (
	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"

	"github.com/petrelnet/petrel/policy"
)

// Cache remembers translations by object. An informer's cache hands out the
// same object until the object changes (an update is a new object), so an
// unchanged pod or policy is translated once, not at every sync: with
// 10,000 pods that was a large part of a change's latency. Sweep forgets
// the objects not asked for since the previous Sweep.
type Cache struct {
	round    uint64
	pods     map[*corev1.Pod]cachedPod
	policies map[*netv1.NetworkPolicy]cachedPolicy
}

type cachedPod struct {
	pod   policy.Pod
	round uint64
}

type cachedPolicy struct {
	policy policy.Policy
	err    error
	round  uint64
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{pods: map[*corev1.Pod]cachedPod{}, policies: map[*netv1.NetworkPolicy]cachedPolicy{}}
}

// Pod is Pod, from the cache when p was translated before.
func (c *Cache) Pod(p *corev1.Pod) policy.Pod {
	e, ok := c.pods[p]
	if !ok {
		e.pod = Pod(p)
	}
	e.round = c.round
	c.pods[p] = e
	return e.pod
}

// NetworkPolicy is NetworkPolicy, from the cache when np was translated
// before.
func (c *Cache) NetworkPolicy(np *netv1.NetworkPolicy) (policy.Policy, error) {
	e, ok := c.policies[np]
	if !ok {
		e.policy, e.err = NetworkPolicy(np)
	}
	e.round = c.round
	c.policies[np] = e
	return e.policy, e.err
}

// Sweep drops the objects not asked for since the last Sweep: deleted, or
// replaced by a newer version.
func (c *Cache) Sweep() {
	for p, e := range c.pods {
		if e.round != c.round {
			delete(c.pods, p)
		}
	}
	for np, e := range c.policies {
		if e.round != c.round {
			delete(c.policies, np)
		}
	}
	c.round++
}
