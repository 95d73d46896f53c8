package ipam

import (
	"bytes"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Get returns the owner's allocations, or none.
func (s *Store) Get(o Owner) ([]Allocation, error) {
	var out []Allocation
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = ownerAllocations(tx, o)
		return err
	})
	return out, err
}

// Release frees the owner's addresses and returns them. Releasing an owner
// that holds nothing is not an error: DEL must be idempotent.
func (s *Store) Release(o Owner) ([]Allocation, error) {
	var out []Allocation
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		out, err = release(tx, o)
		return err
	})
	return out, err
}

func release(tx *bolt.Tx, o Owner) ([]Allocation, error) {
	as, err := ownerAllocations(tx, o)
	if err != nil {
		return nil, err
	}
	ips := tx.Bucket(bucketIPs)
	for _, a := range as {
		if a.ContainerID != o.ContainerID || a.IfName != o.IfName || a.Network != o.Network {
			continue // never free an address someone else holds
		}
		if err := ips.Delete(a.IP.AsSlice()); err != nil {
			return nil, err
		}
	}
	return as, tx.Bucket(bucketOwners).Delete(o.key())
}

// List returns every allocation of network ("" for all networks).
func (s *Store) List(network string) ([]Allocation, error) {
	var out []Allocation
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketIPs).ForEach(func(k, v []byte) error {
			var a Allocation
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("decode allocation %x: %w", k, err)
			}
			if network == "" || a.Network == network {
				out = append(out, a)
			}
			return nil
		})
	})
	return out, err
}

// GC releases every attachment of network that is not in keep, and every
// address record no owner refers to (left by a store written by hand or by
// an older version). It returns what it released.
func (s *Store) GC(network string, keep func(containerID, ifName string) bool) ([]Allocation, error) {
	return s.GCAllocations(network, func(o Owner, _ []Allocation) bool { return keep(o.ContainerID, o.IfName) })
}

// GCAllocations is GC deciding by the owner and its allocations (their
// time, their pod), in the same transaction that releases them.
func (s *Store) GCAllocations(network string, keep func(o Owner, as []Allocation) bool) ([]Allocation, error) {
	var out []Allocation
	err := s.db.Update(func(tx *bolt.Tx) error {
		out = nil
		prefix := []byte(network + "\x00")
		var stale []Owner
		c := tx.Bucket(bucketOwners).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			parts := bytes.SplitN(k, []byte{0}, 3)
			if len(parts) != 3 {
				continue
			}
			o := Owner{Network: network, ContainerID: string(parts[1]), IfName: string(parts[2])}
			as, err := ownerAllocations(tx, o)
			if err != nil {
				return err
			}
			if !keep(o, as) {
				stale = append(stale, o)
			}
		}
		for _, o := range stale {
			as, err := release(tx, o)
			if err != nil {
				return err
			}
			out = append(out, as...)
		}
		orphans, err := dropOrphans(tx, network)
		out = append(out, orphans...)
		return err
	})
	return out, err
}

// dropOrphans deletes address records of network whose owner key is gone.
func dropOrphans(tx *bolt.Tx, network string) ([]Allocation, error) {
	var orphans []Allocation
	owners := tx.Bucket(bucketOwners)
	err := tx.Bucket(bucketIPs).ForEach(func(_, v []byte) error {
		var a Allocation
		if json.Unmarshal(v, &a) != nil || a.Network != network {
			return nil
		}
		if owners.Get(a.Owner.key()) == nil {
			orphans = append(orphans, a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, a := range orphans {
		if err := tx.Bucket(bucketIPs).Delete(a.IP.AsSlice()); err != nil {
			return nil, err
		}
	}
	return orphans, nil
}
