package fib

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
)

// Table is the kernel routing table as Sync sees it: only Petrel's routes.
type Table interface {
	List() ([]Route, error)
	Replace(Route) error
	Delete(Route) error
}

// Programmer keeps a Table equal to the desired routes.
type Programmer struct {
	table Table
	log   *slog.Logger
}

// New returns a Programmer over table.
func New(table Table, log *slog.Logger) *Programmer {
	return &Programmer{table: table, log: log}
}

// Result says what a Sync changed.
type Result struct {
	Replaced, Removed int
}

// Sync makes the table hold exactly want. It is idempotent: with the table
// already equal to want it changes nothing. Independent failures are all
// attempted and joined; a duplicate or malformed desired route is an error
// before anything is touched.
func (p *Programmer) Sync(ctx context.Context, want []Route) (Result, error) {
	seen := map[netip.Prefix]bool{}
	for _, r := range want {
		if err := r.validate(); err != nil {
			return Result{}, err
		}
		if seen[r.Prefix] {
			return Result{}, fmt.Errorf("route %s: desired twice", r.Prefix)
		}
		seen[r.Prefix] = true
	}
	have, err := p.table.List()
	if err != nil {
		return Result{}, fmt.Errorf("list routes: %w", err)
	}
	replace, remove := Diff(have, want)
	var res Result
	var errs []error
	for _, r := range replace {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := p.table.Replace(r); err != nil {
			errs = append(errs, fmt.Errorf("replace %s: %w", r, err))
			continue
		}
		res.Replaced++
		p.log.Debug("route installed", "route", r.String())
	}
	for _, r := range remove {
		if err := p.table.Delete(r); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", r, err))
			continue
		}
		res.Removed++
		p.log.Debug("route removed", "route", r.String())
	}
	return res, errors.Join(errs...)
}
