package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// StoreFile is the name of the store inside the data directory.
const StoreFile = "ipam.db"

var (
	// ErrExhausted means a range family has no free address left.
	ErrExhausted = errors.New("address range exhausted")
	// ErrLocked means another process held the store for longer than the timeout.
	ErrLocked = errors.New("ipam store is locked")
)

var (
	bucketIPs    = []byte("ips")    // address bytes -> Allocation JSON
	bucketOwners = []byte("owners") // ownerKey -> JSON list of addresses
	bucketLast   = []byte("last")   // range string -> last allocated address bytes
)

// Owner identifies one attachment: a container's interface on a network.
type Owner struct {
	Network      string `json:"network"`
	ContainerID  string `json:"containerID"`
	IfName       string `json:"ifname"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
}

func (o Owner) key() []byte {
	return []byte(o.Network + "\x00" + o.ContainerID + "\x00" + o.IfName)
}

// Allocation is one address handed to one attachment.
type Allocation struct {
	IP netip.Addr `json:"ip"`
	Owner
	Time time.Time `json:"time"`
}

// Store is the on-disk record of allocations. bbolt commits each transaction
// with fsync and a copy-on-write B+tree, so a process killed at any point
// leaves either the old or the new state, never a torn one. The file lock
// serialises the CNI processes of concurrent pod starts.
type Store struct {
	db   *bolt.DB
	lock *os.File
	path string
}

// Open opens (creating if needed) the store in dir, waiting at most timeout
// for the file lock.
func Open(dir string, timeout time.Duration) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ipam data dir %s: %w", dir, err)
	}
	lk, err := lock(filepath.Join(dir, LockFile), timeout)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, StoreFile)
	// Every opener holds lk first, so bbolt's own lock is free at once;
	// the timeout only guards against a process that skips lk.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err == nil {
		err = initBuckets(db)
	}
	if err != nil {
		if db != nil {
			db.Close()
		}
		lk.Close()
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s held by another process for more than %s", ErrLocked, path, timeout)
		}
		return nil, fmt.Errorf("open ipam store %s: %w", path, err)
	}
	return &Store{db: db, lock: lk, path: path}, nil
}

// initBuckets creates the buckets of a new store. It writes (and fsyncs)
// only when one is missing: an open of an existing store writes nothing.
func initBuckets(db *bolt.DB) error {
	missing := false
	db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketIPs, bucketOwners, bucketLast} {
			missing = missing || tx.Bucket(b) == nil
		}
		return nil
	})
	if !missing {
		return nil
	}
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketIPs, bucketOwners, bucketLast} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close closes the store and releases the lock.
func (s *Store) Close() error {
	err := s.db.Close()
	return errors.Join(err, s.lock.Close())
}

// Path is the store's file.
func (s *Store) Path() string { return s.path }

// Allocate gives the owner one address of each family present in ranges,
// trying the ranges of a family in order. An owner that already holds
// addresses gets the same ones back, so a repeated ADD is idempotent.
func (s *Store) Allocate(ranges []Range, o Owner, now time.Time) ([]Allocation, error) {
	var out []Allocation
	err := s.db.Update(func(tx *bolt.Tx) error {
		out = nil
		existing, err := ownerAllocations(tx, o)
		if err != nil || len(existing) > 0 {
			out = existing
			return err
		}
		for _, fam := range splitFamilies(ranges) {
			a, err := allocateOne(tx, fam, o, now)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		return putOwner(tx, o, out)
	})
	return out, err
}

// splitFamilies groups ranges by family, IPv4 first, keeping their order.
func splitFamilies(ranges []Range) [][]Range {
	var v4, v6 []Range
	for _, r := range ranges {
		if r.Is4() {
			v4 = append(v4, r)
		} else {
			v6 = append(v6, r)
		}
	}
	var out [][]Range
	for _, f := range [][]Range{v4, v6} {
		if len(f) > 0 {
			out = append(out, f)
		}
	}
	return out
}

func allocateOne(tx *bolt.Tx, family []Range, o Owner, now time.Time) (Allocation, error) {
	ips, last := tx.Bucket(bucketIPs), tx.Bucket(bucketLast)
	used := func(a netip.Addr) bool { return ips.Get(a.AsSlice()) != nil }
	for _, r := range family {
		prev, _ := netip.AddrFromSlice(last.Get([]byte(r.String())))
		a, ok := r.Next(prev, countIn(ips, r), used)
		if !ok {
			continue
		}
		al := Allocation{IP: a, Owner: o, Time: now.UTC()}
		v, err := json.Marshal(al)
		if err != nil {
			return Allocation{}, err
		}
		if err := ips.Put(a.AsSlice(), v); err != nil {
			return Allocation{}, err
		}
		return al, last.Put([]byte(r.String()), a.AsSlice())
	}
	return Allocation{}, fmt.Errorf("%w: no free address in %v", ErrExhausted, family)
}

// countIn counts allocations inside r. Keys are raw address bytes, so the
// addresses of one prefix are contiguous in the B+tree.
func countIn(ips *bolt.Bucket, r Range) int {
	n := 0
	c := ips.Cursor()
	for k, _ := c.Seek(r.Prefix.Addr().AsSlice()); k != nil; k, _ = c.Next() {
		a, ok := netip.AddrFromSlice(k)
		if !ok || !r.Prefix.Contains(a) {
			break
		}
		n++
	}
	return n
}

func putOwner(tx *bolt.Tx, o Owner, as []Allocation) error {
	addrs := make([]netip.Addr, len(as))
	for i, a := range as {
		addrs[i] = a.IP
	}
	v, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketOwners).Put(o.key(), v)
}

func ownerAllocations(tx *bolt.Tx, o Owner) ([]Allocation, error) {
	v := tx.Bucket(bucketOwners).Get(o.key())
	if v == nil {
		return nil, nil
	}
	var addrs []netip.Addr
	if err := json.Unmarshal(v, &addrs); err != nil {
		return nil, fmt.Errorf("decode owner record %s/%s: %w", o.ContainerID, o.IfName, err)
	}
	ips := tx.Bucket(bucketIPs)
	var out []Allocation
	for _, a := range addrs {
		var al Allocation
		if v := ips.Get(a.AsSlice()); v != nil && json.Unmarshal(v, &al) == nil {
			out = append(out, al)
		}
	}
	return out, nil
}
