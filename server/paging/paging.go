// Package paging implements list paging: page sizes and opaque keyset page tokens.
package paging

import (
	"encoding/base64"
	"strings"

	"github.com/gatehouse/gatehouse/server/errs"
)

// DefaultSize and MaxSize bound list pages (API.md: default 50, at most 1000).
const (
	DefaultSize = 50
	MaxSize     = 1000
)

// Size returns the page size to use for a requested size.
func Size(requested int32) int {
	switch {
	case requested <= 0:
		return DefaultSize
	case requested > MaxSize:
		return MaxSize
	default:
		return int(requested)
	}
}

const tokenPrefix = "p1:"

// Token encodes the sort key of the last item of a page.
func Token(lastKey string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(tokenPrefix + lastKey))
}

// Parse decodes a page token; "" is the first page. A token that was not made by Token is an
// InvalidArgument error on the page_token field.
func Parse(token string) (after string, err error) {
	if token == "" {
		return "", nil
	}
	raw, derr := base64.RawURLEncoding.DecodeString(token)
	if derr != nil || !strings.HasPrefix(string(raw), tokenPrefix) {
		return "", errs.InvalidArgument("INVALID_PAGE_TOKEN", "page_token is not a token returned by this list",
			errs.FieldViolation{Field: "page_token", Description: "not a page token returned by this list"})
	}
	return strings.TrimPrefix(string(raw), tokenPrefix), nil
}

// Trim cuts a result fetched with limit size+1 to one page and returns the token of the next page
// ("" when this is the last page); key gives an item's sort key.
func Trim[T any](items []T, size int, key func(T) string) ([]T, string) {
	if len(items) <= size {
		return items, ""
	}
	items = items[:size]
	return items, Token(key(items[size-1]))
}
