package paging_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/paging"
)

func TestSize(t *testing.T) {
	for in, want := range map[int32]int{0: 50, -3: 50, 1: 1, 1000: 1000, 1001: 1000} {
		if got := paging.Size(in); got != want {
			t.Errorf("Size(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestTokens(t *testing.T) {
	for _, key := range []string{"alice", "", "a:b/c?d"} {
		got, err := paging.Parse(paging.Token(key))
		if err != nil || got != key {
			t.Errorf("Parse(Token(%q)) = %q, %v", key, got, err)
		}
	}
	if got, err := paging.Parse(""); got != "" || err != nil {
		t.Errorf(`Parse("") = %q, %v`, got, err)
	}
	_, err := paging.Parse("not a token")
	if e, ok := errs.As(err); !ok || e.Kind != errs.KindInvalidArgument || e.Violations[0].Field != "page_token" {
		t.Errorf("Parse(garbage) = %v, want InvalidArgument on page_token", err)
	}
}
