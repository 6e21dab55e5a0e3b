package transport

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
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
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/reflect/protoreflect"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/auth"
	"github.com/gatehouse/gatehouse/server/errs"
)

// NewGatewayMux returns the grpc-gateway mux that serves REST JSON under /v1/. It keeps
// grpc-gateway's defaults (the Authorization header forwarded as authorization metadata, the
// standard JSON mapping with lowerCamelCase names and enum names, and the standard
// {"code", "message", "details"} error body and HTTP status mapping) with these changes:
//
//   - Responses emit zero scalars and empty lists, but leave unset message fields (timestamps,
//     durations) out rather than writing null: protojson's EmitDefaultValues, not EmitUnpopulated.
//   - Bodies and query parameters are parsed strictly: an unknown body field, an unknown query
//     parameter or an unknown enum value name is INVALID_ARGUMENT with a BadRequest violation
//     naming it (ErrorInfo UnknownFieldReason or MalformedReason).
//   - Request bodies are bounded by o.MaxRequestBytes as LimitRequestBodies does (it is applied
//     again here for a gateway mounted without it); an oversized one is HTTP 413 with
//     RESOURCE_EXHAUSTED and the ErrorInfo RequestTooLargeReason.
//   - A method the path does not serve is HTTP 405 with an Allow header listing those it does,
//     and an unknown path 404, both with an ErrorInfo (METHOD_NOT_ALLOWED, ROUTE_NOT_FOUND).
//   - Parse errors carry an ErrorInfo and, when the parser names a field, a BadRequest violation,
//     and repeat at most a bounded part of the caller's value (boundEchoes).
//   - A request the gateway refuses before the call (a parse error, an unknown query parameter)
//     from a caller the interceptors would turn away gets their answer instead (admit): an
//     anonymous caller of a method that needs a token learns nothing about the request's shape,
//     as on the other fronts.
//   - A custom method's path with a method it does not serve (GET /v1/users/ID:setPassword) is
//     405, not a call of the plain resource's method with ":setPassword" in its id
//     (swallowedVerb).
//
// It adds two metadata entries to every call: GatewayHeader with o.GatewaySecret (when set) and
// x-forwarded-for with the address of the HTTP peer. Register the services on it over a LocalConn
// whose streams go over a connection made by DialSelf.
func NewGatewayMux(o Options) *runtime.ServeMux {
	limit := int64(o.maxRequestBytes())
	g := &gateway{rules: o.Rules, authn: o.Authenticator}
	var mux *runtime.ServeMux
	mux = runtime.NewServeMux(
		runtime.WithMetadata(gatewayMetadata(o.GatewaySecret)),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, gatewayMarshaler),
		runtime.WithErrorHandler(g.handleError),
		runtime.WithRoutingErrorHandler(g.handleRoutingError),
		// NOTE: probeRoute must come first, so that a probe runs nothing else.
		runtime.WithMiddlewares(probeRoute, func(next runtime.HandlerFunc) runtime.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request, pathParams map[string]string) {
				if swallowedVerb(r) {
					_, outbound := runtime.MarshalerForRequest(mux, r)
					g.handleRoutingError(r.Context(), mux, outbound, w, r, http.StatusMethodNotAllowed)
					return
				}
				r = withLimitedBody(w, r, limit)
				if err := checkQuery(r); err != nil {
					if refused := g.admit(r.Context(), r); refused != nil {
						err = refused
					}
					_, outbound := runtime.MarshalerForRequest(mux, r)
					g.handleError(r.Context(), mux, outbound, w, r, ToGRPC(nil, err))
					return
				}
				next(w, r, pathParams)
			}
		}),
	)
	return mux
}

// gateway holds what the gateway's error handlers need to answer as the interceptors would.
type gateway struct {
	// rules and authn are Options.Rules and Options.Authenticator; admit does nothing without them.
	rules auth.RuleSet
	authn auth.Authenticator
}

// admit returns the error the interceptors would refuse the caller of r's route with before they
// look at the request (core.admit): a method without a rule; a malformed authorization header;
// no token, or one that does not authenticate, for a method that needs one. It returns nil for a
// caller they would let through, and for a request that matched no route.
//
// The gateway parses the body and query into the request message before it makes the call, so
// without this an anonymous caller would learn from parse errors what the interceptors keep from
// it. It runs only on that error path: a token is authenticated once more there (passively, as
// the call fails anyway), never on a call that goes through.
func (g *gateway) admit(ctx context.Context, r *http.Request) error {
	if g.rules == nil || g.authn == nil {
		return nil
	}
	route, ok := routeOf(ctx, r.Method)
	if !ok {
		return nil
	}
	rule, ok := g.rules(route.method)
	if !ok {
		// As the interceptors: denied to everyone, before any authentication.
		return auth.Denied()
	}
	_, err := authorizeCaller(auth.Passive(ctx), rule, g.authn, r.Header.Get("Authorization"))
	return err
}

// gatewayMarshaler is the gateway's JSON mapping (see NewGatewayMux).
var gatewayMarshaler = &runtime.HTTPBodyMarshaler{Marshaler: strictJSONPb{&runtime.JSONPb{
	MarshalOptions: protojson.MarshalOptions{EmitDefaultValues: true},
}}}

// strictJSONPb is grpc-gateway's JSONPb with protojson's strict unmarshalling, whose errors for
// unknown fields and enum value names name the field by its path (jsonProblem).
type strictJSONPb struct{ *runtime.JSONPb }

// Unmarshal implements runtime.Marshaler.
func (j strictJSONPb) Unmarshal(data []byte, v any) error {
	err := j.JSONPb.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	if md := messageDescriptorOf(v); md != nil {
		if p, ok := findJSONProblem(md, data, err); ok {
			return errors.New(p.text())
		}
	}
	return err
}

// NewDecoder implements runtime.Marshaler.
func (j strictJSONPb) NewDecoder(r io.Reader) runtime.Decoder {
	return strictDecoder{dec: json.NewDecoder(r), j: j}
}

// strictDecoder decodes one JSON value at a time with strictJSONPb.Unmarshal.
type strictDecoder struct {
	dec *json.Decoder
	j   strictJSONPb
}

// Decode implements runtime.Decoder. An empty body is io.EOF, which the gateway takes as no body.
// A request body is one JSON value: anything after it but white space is refused, as Connect
// refuses it, rather than dropped unread.
func (d strictDecoder) Decode(v any) error {
	var raw json.RawMessage
	if err := d.dec.Decode(&raw); err != nil {
		return err
	}
	if _, err := d.dec.Token(); !errors.Is(err, io.EOF) {
		return errTrailingJSON
	}
	return d.j.Unmarshal(raw, v)
}

// errTrailingJSON is Decode's error for a body with more than one JSON value.
var errTrailingJSON = errors.New("invalid JSON body: unexpected data after the first value")

// MalformedReason is the ErrorInfo reason of a JSON request that could not be parsed (bad JSON, a
// value of the wrong JSON type, an unknown enum value name, an unparseable query parameter).
const MalformedReason = "MALFORMED_REQUEST"

// fieldInParseError finds the field named in protojson and query-parameter parse errors, e.g.
// `invalid value for string field username: 123` or `parsing field "page_size": ...`.
var fieldInParseError = regexp.MustCompile(`(?:field|oneof) "?([A-Za-z_][A-Za-z0-9_.]*)"?`)

// restRoute is what a REST route's request is: its message, and where the JSON body goes in it
// (body is nil for routes without a body; prefix is "" for body: "*", "user." for body: "user").
type restRoute struct {
	// method is the full gRPC method name ("/gatehouse.v1.IdentityService/GetUser").
	method string
	input  protoreflect.MessageDescriptor
	prefix string
	body   protoreflect.MessageDescriptor
}

// restRoutes maps "VERB /pattern" of every REST route to its restRoute, read from the
// google.api.http annotations, so that parse errors can name the field by its path in the request
// and query parameters can be checked against the request message.
var restRoutes = sync.OnceValue(func() map[string]restRoute {
	out := map[string]restRoute{}
	for _, file := range []protoreflect.FileDescriptor{
		gatehousev1.File_gatehouse_v1_identity_proto, gatehousev1.File_gatehouse_v1_session_proto, gatehousev1.File_gatehouse_v1_policy_proto,
	} {
		for i := 0; i < file.Services().Len(); i++ {
			methods := file.Services().Get(i).Methods()
			for j := 0; j < methods.Len(); j++ {
				m := methods.Get(j)
				rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
				if rule == nil {
					continue
				}
				route := restRoute{method: "/" + string(m.Parent().FullName()) + "/" + string(m.Name()), input: m.Input()}
				switch {
				case rule.Body == "":
				case rule.Body == "*":
					route.body = m.Input()
				default:
					if fd := m.Input().Fields().ByName(protoreflect.Name(rule.Body)); fd != nil && fd.Message() != nil {
						route.prefix, route.body = rule.Body+".", fd.Message()
					}
				}
				// NOTE: under both spellings of the template: the annotation's ("{user_id}"), which
				// runtime.HTTPPathPattern gives inside a handler, and the compiled pattern's
				// ("{user_id=*}"), which runtime.HTTPPattern gives to middleware.
				out[httpVerb(rule)] = route
				out[simpleVariable.ReplaceAllString(httpVerb(rule), "{$1=*}")] = route
			}
		}
	}
	return out
})

func httpVerb(r *annotations.HttpRule) string {
	switch p := r.Pattern.(type) {
	case *annotations.HttpRule_Get:
		return http.MethodGet + " " + p.Get
	case *annotations.HttpRule_Post:
		return http.MethodPost + " " + p.Post
	case *annotations.HttpRule_Put:
		return http.MethodPut + " " + p.Put
	case *annotations.HttpRule_Patch:
		return http.MethodPatch + " " + p.Patch
	case *annotations.HttpRule_Delete:
		return http.MethodDelete + " " + p.Delete
	}
	return ""
}

// restVerbs is the set of the custom methods' verbs in the REST routes ("grant" of
// "/v1/roles/{role}:grant").
var restVerbs = sync.OnceValue(func() map[string]bool {
	out := map[string]bool{}
	for key := range restRoutes() {
		if verb := lastSegmentVerb(key); verb != "" {
			out[verb] = true
		}
	}
	return out
})

// lastSegmentVerb returns what follows the last colon of a path's last segment, outside a template
// variable: "grant" for "/v1/roles/{role}:grant" and for "/v1/roles/x:grant", "" for
// "/v1/roles/{role}".
func lastSegmentVerb(path string) string {
	seg := path[strings.LastIndexByte(path, '/')+1:]
	i := strings.LastIndexByte(seg, ':')
	if i < 0 || strings.ContainsAny(seg[i:], "{}") {
		return ""
	}
	return seg[i+1:]
}

// swallowedVerb reports whether the route r matched took a custom method's verb into its last path
// variable. grpc-gateway matches GET /v1/users/ID:setPassword to GET /v1/users/{user_id} with
// user_id "ID:setPassword" (a variable matches any segment). No id or role name holds a colon, so
// the request is one for the custom method POST /v1/users/{user_id}:setPassword with a method it
// does not serve: a routing error, not a call with a malformed id.
func swallowedVerb(r *http.Request) bool {
	p, ok := runtime.HTTPPattern(r.Context())
	if !ok || p.Verb() != "" {
		return false
	}
	verb := lastSegmentVerb(r.URL.Path)
	return verb != "" && restVerbs()[verb]
}

// simpleVariable is a path template variable without a pattern of its own.
var simpleVariable = regexp.MustCompile(`\{([^}=]+)\}`)

// routeOf returns the restRoute of the route a request matched.
func routeOf(ctx context.Context, method string) (restRoute, bool) {
	pattern, ok := runtime.HTTPPathPattern(ctx)
	if !ok {
		p, ok := runtime.HTTPPattern(ctx)
		if !ok {
			return restRoute{}, false
		}
		pattern = p.String()
	}
	route, ok := restRoutes()[method+" "+pattern]
	return route, ok
}

// bodyFieldPath turns the field a parser named into its path in the request: oneofs by their own
// name, and body fields (which the JSON parser names by JSON name, relative to the body message)
// by their proto path.
func bodyFieldPath(ctx context.Context, method, name string) string {
	if i := strings.LastIndexByte(name, '.'); i >= 0 && strings.Contains(name, "gatehouse.") {
		return name[i+1:] // a fully qualified oneof name
	}
	route, ok := routeOf(ctx, method)
	if !ok || route.body == nil {
		return name
	}
	if fd := route.body.Fields().ByJSONName(name); fd != nil {
		return route.prefix + string(fd.Name())
	}
	return name
}

// handleError is the gateway's error handler: it gives its own errors the details every other
// error carries (gatewayError) and writes the standard error body.
func (g *gateway) handleError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, g.gatewayError(ctx, r, err))
}

// gatewayError maps the errors the gateway makes itself, which grpc-gateway returns without
// details, to typed ones:
//
//   - a body refused for its size (LimitRequestBodies), and a message refused for its size before
//     its handler (LocalConn): HTTP 413 with RESOURCE_EXHAUSTED and the ErrorInfo
//     RequestTooLargeReason;
//   - an unknown field or enum value name (strictJSONPb): its jsonProblem error, naming the field
//     by its path in the request;
//   - any other parse error: MalformedReason, with a BadRequest violation when the parser names a
//     field, and the caller's value bounded in the message;
//
// and a parse error of a caller the interceptors would turn away is their answer (admit).
func (g *gateway) gatewayError(ctx context.Context, r *http.Request, err error) error {
	if limit, ok := refusedLimit(r); ok {
		return &runtime.HTTPStatusError{HTTPStatus: http.StatusRequestEntityTooLarge, Err: tooLargeStatus(limit).Err()}
	}
	if hse, ok := errors.AsType[*runtime.HTTPStatusError](err); ok {
		// Ours (routing errors) carry details; grpc-gateway's (a malformed %-escape in the path)
		// carry a plain error.
		if st, ok := status.FromError(hse.Err); ok && len(st.Details()) > 0 {
			return err
		}
		if refused := g.admit(ctx, r); refused != nil {
			return ToGRPC(nil, refused)
		}
		return &runtime.HTTPStatusError{HTTPStatus: hse.HTTPStatus, Err: malformed(ctx, r, hse.Err.Error())}
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if isTooLarge(st) {
		return &runtime.HTTPStatusError{HTTPStatus: http.StatusRequestEntityTooLarge, Err: err}
	}
	if st.Code() != codes.InvalidArgument || len(st.Details()) != 0 {
		return err
	}
	if refused := g.admit(ctx, r); refused != nil {
		return ToGRPC(nil, refused)
	}
	if p, ok := parseJSONProblem(st.Message()); ok {
		prefix := ""
		if route, ok := routeOf(ctx, r.Method); ok {
			prefix = route.prefix
		}
		return ToGRPC(nil, p.err(prefix))
	}
	return malformed(ctx, r, st.Message())
}

// malformed is the INVALID_ARGUMENT of a request the gateway could not parse, with parser's
// message msg: MalformedReason, a BadRequest violation when msg names a field, and the caller's
// values in msg bounded.
func malformed(ctx context.Context, r *http.Request, msg string) error {
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: MalformedReason, Domain: ErrorDomain}}
	if f := fieldInParseError.FindStringSubmatch(msg); f != nil {
		details = append(details, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: boundedKey(bodyFieldPath(ctx, r.Method, f[1])), Description: "malformed value"},
		}})
	}
	st := status.New(codes.InvalidArgument, "malformed request: "+boundEchoes(msg))
	if withDetails, err := st.WithDetails(details...); err == nil {
		st = withDetails
	}
	return st.Err()
}

// checkQuery refuses a query parameter that names no field of the request message of the route r
// matched. grpc-gateway takes a field by its proto or its JSON name, path segments separated by
// dots, and a map entry as field[key].
func checkQuery(r *http.Request) error {
	route, ok := routeOf(r.Context(), r.Method)
	if !ok || r.URL.RawQuery == "" {
		return nil
	}
	keys := slices.Sorted(maps.Keys(r.URL.Query()))
	for _, key := range keys {
		fieldKey := key
		if m := mapKeyInQuery.FindStringSubmatch(key); m != nil {
			fieldKey = m[1]
		}
		if !namesField(route.input, strings.Split(fieldKey, ".")) {
			return errs.InvalidArgument(UnknownFieldReason, "unknown query parameter "+quote(key),
				errs.FieldViolation{Field: boundedKey(key), Description: "unknown query parameter"})
		}
	}
	return nil
}

// mapKeyInQuery is grpc-gateway's syntax for a map entry in a query parameter name.
var mapKeyInQuery = regexp.MustCompile(`^(.*)\[(.*)\]$`)

// namesField reports whether path leads to a field of md. A path that goes on past a field that is
// not a singular message is left to grpc-gateway's own error.
func namesField(md protoreflect.MessageDescriptor, path []string) bool {
	for i, name := range path {
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			fd = md.Fields().ByJSONName(name)
		}
		if fd == nil {
			return false
		}
		if i == len(path)-1 || fd.Message() == nil || fd.IsList() || fd.IsMap() {
			return true
		}
		md = fd.Message()
	}
	return true
}

// probeKey marks the context of a request that only asks whether a route matches (allowedMethods).
type probeKey struct{}

// probeRoute is the gateway middleware that answers probes: it records whether the route matched
// (a route that swallowed a custom method's verb does not count) and runs nothing.
func probeRoute(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, pathParams map[string]string) {
		if matched, ok := r.Context().Value(probeKey{}).(*bool); ok {
			*matched = !swallowedVerb(r)
			return
		}
		next(w, r, pathParams)
	}
}

// restMethods are the methods REST routes use, in the order an Allow header lists them.
var restMethods = []string{http.MethodDelete, http.MethodGet, http.MethodPatch, http.MethodPost, http.MethodPut}

// allowedMethods returns the methods with a route for r's path, by asking mux whether the same path
// with each method matches one (probeRoute).
func allowedMethods(mux *runtime.ServeMux, r *http.Request) []string {
	var allowed []string
	for _, method := range restMethods {
		if method == r.Method {
			continue
		}
		matched := false
		probe := r.Clone(context.WithValue(r.Context(), probeKey{}, &matched))
		probe.Method, probe.Header, probe.Body, probe.ContentLength = method, http.Header{}, http.NoBody, 0
		mux.ServeHTTP(discardResponse{}, probe)
		if matched {
			allowed = append(allowed, method)
		}
	}
	return allowed
}

// discardResponse is the response writer of a probe.
type discardResponse struct{}

func (discardResponse) Header() http.Header         { return http.Header{} }
func (discardResponse) Write(b []byte) (int, error) { return len(b), nil }
func (discardResponse) WriteHeader(int)             {}

// Reasons of the gateway's routing errors.
const (
	// MethodNotAllowedReason: HTTP 405, code UNIMPLEMENTED; the metadata entry allow lists the
	// methods the path serves, as the Allow header does.
	MethodNotAllowedReason = "METHOD_NOT_ALLOWED"
	// RouteNotFoundReason: HTTP 404, code NOT_FOUND; no REST route has the path.
	RouteNotFoundReason = "ROUTE_NOT_FOUND"
)

// handleRoutingError answers a request no route took, with a typed error: 405 with an Allow header
// for a path served with other methods, 404 for an unknown path.
func (g *gateway) handleRoutingError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	if _, probing := r.Context().Value(probeKey{}).(*bool); probing {
		return
	}
	var allowed []string
	if httpStatus == http.StatusMethodNotAllowed {
		// NOTE: none for a path only a swallowed verb matched (GET /v1/users/ID:grant).
		if allowed = allowedMethods(mux, r); len(allowed) == 0 {
			httpStatus = http.StatusNotFound
		}
	}
	var st *status.Status
	var info *errdetails.ErrorInfo
	switch httpStatus {
	case http.StatusMethodNotAllowed:
		allow := strings.Join(allowed, ", ")
		w.Header().Set("Allow", allow)
		st = status.Newf(codes.Unimplemented, "method %s is not allowed on this path; allowed: %s", quote(r.Method), allow)
		info = &errdetails.ErrorInfo{Reason: MethodNotAllowedReason, Domain: ErrorDomain, Metadata: map[string]string{"allow": allow}}
	case http.StatusNotFound:
		st = status.New(codes.NotFound, "no REST route has this path")
		info = &errdetails.ErrorInfo{Reason: RouteNotFoundReason, Domain: ErrorDomain}
	default:
		httpStatus = http.StatusBadRequest
		st = status.New(codes.InvalidArgument, "malformed request path")
		info = &errdetails.ErrorInfo{Reason: MalformedReason, Domain: ErrorDomain}
	}
	if withDetails, err := st.WithDetails(info); err == nil {
		st = withDetails
	}
	g.handleError(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: httpStatus, Err: st.Err()})
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
