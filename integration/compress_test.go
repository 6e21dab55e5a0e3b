package integration_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
	"github.com/gatehouse/gatehouse/server/transport"
)

// TestConnectCompressesOnlyLargeResponses: a Connect client that accepts gzip gets a small answer
// (a validated session) as it is, and a large one (a page of users) compressed; both decode.
func TestConnectCompressesOnlyLargeResponses(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, testnode.SQLite)
	g := n.Client(testnode.GRPC)
	admin := testnode.AdminToken(t, g)
	for i := range 8 {
		testnode.MustCall[gatehousev1.CreateUserResponse](t, g, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
			&gatehousev1.CreateUserRequest{Username: "user" + string(rune('a'+i)), DisplayName: strings.Repeat("A long display name. ", 10)})
	}
	hc := testnode.HTTPClient()
	call := func(procedure, body string) (encoding string, plain []byte) {
		t.Helper()
		// NOTE: an Accept-Encoding set by the request leaves the body as it came: the transport
		// decompresses only what it asked for itself.
		code, header, raw := hhDo(t, hc, http.MethodPost, n.BaseURL()+procedure, "application/json", strings.NewReader(body), int64(len(body)),
			"Accept-Encoding", "gzip", "Authorization", "Bearer "+admin)
		if code != http.StatusOK {
			t.Fatalf("%s: HTTP %d: %s", procedure, code, raw)
		}
		encoding = header.Get("Content-Encoding")
		if encoding != "gzip" {
			return encoding, raw
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		plain, err = io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return encoding, plain
	}

	enc, body := call("/gatehouse.v1.SessionService/ValidateSession", `{"token":"`+admin+`"}`)
	var v gatehousev1.ValidateSessionResponse
	if err := protojson.Unmarshal(body, &v); err != nil {
		t.Fatalf("decoding a validation: %v: %s", err, body)
	}
	if enc != "" || len(body) >= transport.CompressMinBytes {
		t.Fatalf("a %d-byte validation came with Content-Encoding %q, want none under %d bytes", len(body), enc, transport.CompressMinBytes)
	}

	enc, body = call("/gatehouse.v1.IdentityService/ListUsers", `{"pageSize":100}`)
	var list gatehousev1.ListUsersResponse
	if err := protojson.Unmarshal(body, &list); err != nil {
		t.Fatalf("decoding a page of users: %v", err)
	}
	if len(body) < transport.CompressMinBytes || enc != "gzip" {
		t.Fatalf("a %d-byte page of %d users came with Content-Encoding %q, want gzip", len(body), len(list.Users), enc)
	}
}
