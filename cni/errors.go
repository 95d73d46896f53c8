package cni

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/petrelnet/petrel/ipam"
)

// Petrel's own error codes (the spec reserves 100 and up for plugins).
const (
	// ErrRangeExhausted: no free address is left in the configured ranges.
	ErrRangeExhausted uint = 100
	// ErrCheckFailed: CHECK found the attachment differs from prevResult.
	ErrCheckFailed uint = 101
)

// errf builds a CNI error whose message names the cause.
func errf(code uint, format string, a ...any) *types.Error {
	return types.NewError(code, fmt.Sprintf(format, a...), "")
}

// ipamError maps store errors to CNI codes.
func ipamError(op string, err error) *types.Error {
	switch {
	case errors.Is(err, ipam.ErrExhausted):
		return errf(ErrRangeExhausted, "%s: %v", op, err)
	case errors.Is(err, ipam.ErrLocked):
		return errf(types.ErrTryAgainLater, "%s: %v", op, err)
	default:
		return errf(types.ErrIOFailure, "%s: %v", op, err)
	}
}

// asCNIError keeps a *types.Error as it is and wraps anything else.
func asCNIError(code uint, op string, err error) *types.Error {
	var e *types.Error
	if errors.As(err, &e) {
		return e
	}
	return errf(code, "%s: %v", op, err)
}
