package transport

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
)

// NewGatewayMux returns the grpc-gateway mux that serves REST JSON under /v1/. It keeps
// grpc-gateway's defaults (the Authorization header forwarded as authorization metadata, the
// standard JSON mapping with lowerCamelCase names, enum names and unpopulated fields emitted, and
// the standard {"code", "message", "details"} error body and HTTP status mapping) and adds two
// metadata entries to every call: GatewayHeader with o.GatewaySecret (when set) and
// x-forwarded-for with the address of the HTTP peer. Register the services on it with
// RegisterGateway.
func NewGatewayMux(o Options) *runtime.ServeMux {
	return runtime.NewServeMux(runtime.WithMetadata(gatewayMetadata(o.GatewaySecret)))
}

// gatewayMetadata builds the metadata annotator of the gateway.
//
// NOTE: grpc-gateway would send x-forwarded-for as the client's own X-Forwarded-For values
// followed by the peer address, so its first entry is whatever the client claims. Metadata from
// an annotator replaces the header-derived entries under the same key, so x-forwarded-for is set
// here to the peer address alone ("unknown" if it cannot be read): the first entry, which the gRPC
// interceptor trusts when the gateway secret is present, is then the address the HTTP server saw.
// A node behind a reverse proxy therefore sees the proxy's address; trusting a proxy's header
// would need an explicit list of trusted proxies.
func gatewayMetadata(secret string) func(context.Context, *http.Request) metadata.MD {
	return func(_ context.Context, r *http.Request) metadata.MD {
		md := metadata.MD{}
		if secret != "" {
			md.Set(GatewayHeader, secret)
		}
		forwarded := "unknown"
		if addr, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			forwarded = addr.Addr().Unmap().String()
		}
		md.Set(headerForwardedFor, forwarded)
		return md
	}
}

// RegisterGateway registers the REST routes of every Gatehouse service on mux, forwarding them
// through conn (see DialSelf).
func RegisterGateway(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		gatehousev1.RegisterIdentityServiceHandler,
		gatehousev1.RegisterSessionServiceHandler,
		gatehousev1.RegisterPolicyServiceHandler,
	} {
		if err := register(ctx, mux, conn); err != nil {
			return err
		}
	}
	return nil
}

// DialSelf returns a client connection to the node's own gRPC port for the gateway. target is a
// grpc-go target or a listen address; a listen address without a host or with an unspecified one
// (":9090", "0.0.0.0:9090", "[::]:9090") is dialled on the loopback address. The connection uses
// TLS with tlsConfig, or no transport security when tlsConfig is nil; with TLS, set
// tlsConfig.ServerName when the certificate does not name the dialled host. The connection is
// made lazily; ctx is only checked for being done already. Close the connection when the gateway
// stops.
func DialSelf(ctx context.Context, target string, tlsConfig *tls.Config) (*grpc.ClientConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if tlsConfig != nil {
		creds = credentials.NewTLS(tlsConfig)
	}
	return grpc.NewClient(selfTarget(target), grpc.WithTransportCredentials(creds))
}

// selfTarget turns a listen address into an address to dial.
func selfTarget(target string) string {
	if strings.Contains(target, "://") || strings.HasPrefix(target, "unix:") {
		return target
	}
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return target
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// NewGatewaySecret returns a fresh random secret for Options.GatewaySecret (printable ASCII, 130
// bits). Make one per process and give it to both the gRPC interceptors and the gateway.
func NewGatewaySecret() string {
	return rand.Text()
}
