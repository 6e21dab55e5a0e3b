package transport

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/reflect/protoreflect"

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
	return runtime.NewServeMux(
		runtime.WithMetadata(gatewayMetadata(o.GatewaySecret)),
		runtime.WithErrorHandler(malformedRequestDetails),
	)
}

// MalformedReason is the ErrorInfo reason of a REST request that could not be parsed at all (bad
// JSON, a value of the wrong JSON type, an unparseable query parameter).
const MalformedReason = "MALFORMED_REQUEST"

// fieldInParseError finds the field named in protojson and query-parameter parse errors, e.g.
// `invalid value for string field username: 123` or `parsing field "page_size": ...`.
var fieldInParseError = regexp.MustCompile(`(?:field|oneof) "?([A-Za-z_][A-Za-z0-9_.]*)"?`)

// restBody is where a REST route's JSON body goes in its request: a message, and its path prefix
// in the request ("" for body: "*", "user." for body: "user").
type restBody struct {
	prefix string
	msg    protoreflect.MessageDescriptor
}

// restBodies maps "VERB /pattern" of every REST route with a body to where the body goes, read
// from the google.api.http annotations, so that parse errors can name the field by its path in
// the request.
var restBodies = sync.OnceValue(func() map[string]restBody {
	out := map[string]restBody{}
	for _, file := range []protoreflect.FileDescriptor{
		gatehousev1.File_gatehouse_v1_identity_proto, gatehousev1.File_gatehouse_v1_session_proto, gatehousev1.File_gatehouse_v1_policy_proto,
	} {
		for i := 0; i < file.Services().Len(); i++ {
			methods := file.Services().Get(i).Methods()
			for j := 0; j < methods.Len(); j++ {
				m := methods.Get(j)
				rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
				switch {
				case rule == nil || rule.Body == "":
				case rule.Body == "*":
					out[httpVerb(rule)] = restBody{msg: m.Input()}
				default:
					if fd := m.Input().Fields().ByName(protoreflect.Name(rule.Body)); fd != nil && fd.Message() != nil {
						out[httpVerb(rule)] = restBody{prefix: rule.Body + ".", msg: fd.Message()}
					}
				}
			}
		}
	}
	return out
})

func httpVerb(r *annotations.HttpRule) string {
	switch p := r.Pattern.(type) {
	case *annotations.HttpRule_Post:
		return http.MethodPost + " " + p.Post
	case *annotations.HttpRule_Put:
		return http.MethodPut + " " + p.Put
	case *annotations.HttpRule_Patch:
		return http.MethodPatch + " " + p.Patch
	}
	return ""
}

// bodyFieldPath turns the field a parser named into its path in the request: oneofs by their own
// name, and body fields (which the JSON parser names by JSON name, relative to the body message)
// by their proto path.
func bodyFieldPath(ctx context.Context, method, name string) string {
	if i := strings.LastIndexByte(name, '.'); i >= 0 && strings.Contains(name, "gatehouse.") {
		return name[i+1:] // a fully qualified oneof name
	}
	pattern, ok := runtime.HTTPPathPattern(ctx)
	if !ok {
		return name
	}
	body, ok := restBodies()[method+" "+pattern]
	if !ok {
		return name
	}
	if fd := body.msg.Fields().ByJSONName(name); fd != nil {
		return body.prefix + string(fd.Name())
	}
	return name
}

// malformedRequestDetails gives the gateway's own parse errors, which grpc-gateway returns without
// details, the details every other INVALID_ARGUMENT carries: an ErrorInfo reason and, when the
// parser names the field, a BadRequest violation; then it writes the standard error body.
func malformedRequestDetails(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	st, ok := status.FromError(err)
	if ok && st.Code() == codes.InvalidArgument && len(st.Details()) == 0 {
		details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: MalformedReason, Domain: ErrorDomain}}
		if f := fieldInParseError.FindStringSubmatch(st.Message()); f != nil {
			details = append(details, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
				{Field: bodyFieldPath(ctx, r.Method, f[1]), Description: "malformed value"},
			}})
		}
		if withDetails, derr := status.New(codes.InvalidArgument, "malformed request: "+st.Message()).WithDetails(details...); derr == nil {
			err = withDetails.Err()
		}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
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
