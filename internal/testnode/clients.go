package testnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	_ "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1" // registers the service descriptors
	"github.com/gatehouse/gatehouse/gen/go/gatehouse/v1/gatehousev1connect"
)

// Protocol names a front.
type Protocol string

// The fronts every behavioural test runs through.
const (
	GRPC    Protocol = "grpc"
	Connect Protocol = "connect"
	REST    Protocol = "rest"
)

// Protocols lists every front.
var Protocols = []Protocol{GRPC, Connect, REST}

// Invoker calls one unary RPC by its full method name ("/gatehouse.v1.IdentityService/GetUser")
// with an optional bearer token. Errors of every front come back as gRPC status errors (with their
// details), so tests assert on them the same way.
type Invoker interface {
	Invoke(ctx context.Context, method, token string, req, resp proto.Message) error
}

// Client returns an Invoker for the node through front p. Its connections close with the test.
func (n *Node) Client(p Protocol) Invoker {
	n.t.Helper()
	switch p {
	case GRPC:
		conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			n.t.Fatalf("dialling gRPC: %v", err)
		}
		n.t.Cleanup(func() { _ = conn.Close() })
		return grpcInvoker{conn}
	case Connect:
		return newConnectInvoker(n.BaseURL())
	case REST:
		return &restInvoker{base: n.BaseURL(), http: HTTPClient()}
	}
	n.t.Fatalf("unknown protocol %q", p)
	return nil
}

// ForEach runs f as a subtest for every backend and every front, each with its own node.
func ForEach(t *testing.T, f func(t *testing.T, n *Node, c Invoker)) {
	for _, b := range Backends {
		for _, p := range Protocols {
			t.Run(string(b)+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				n := Start(t, b)
				f(t, n, n.Client(p))
			})
		}
	}
}

type grpcInvoker struct{ conn *grpc.ClientConn }

func (g grpcInvoker) Invoke(ctx context.Context, method, token string, req, resp proto.Message) error {
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return g.conn.Invoke(ctx, method, req, resp)
}

// connectInvoker calls the generated Connect clients (Connect protocol, JSON codec) by reflection.
type connectInvoker struct {
	clients map[string]reflect.Value
}

type tokenKey struct{}

func newConnectInvoker(base string) *connectInvoker {
	auth := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if tok, _ := ctx.Value(tokenKey{}).(string); tok != "" {
				req.Header().Set("Authorization", "Bearer "+tok)
			}
			return next(ctx, req)
		}
	})
	hc := HTTPClient()
	opts := []connect.ClientOption{connect.WithInterceptors(auth), connect.WithProtoJSON()}
	return &connectInvoker{clients: map[string]reflect.Value{
		gatehousev1connect.IdentityServiceName: reflect.ValueOf(gatehousev1connect.NewIdentityServiceClient(hc, base, opts...)),
		gatehousev1connect.SessionServiceName:  reflect.ValueOf(gatehousev1connect.NewSessionServiceClient(hc, base, opts...)),
		gatehousev1connect.PolicyServiceName:   reflect.ValueOf(gatehousev1connect.NewPolicyServiceClient(hc, base, opts...)),
	}}
}

func (c *connectInvoker) Invoke(ctx context.Context, method, token string, req, resp proto.Message) error {
	svc, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	client, ok := c.clients[svc]
	if !ok {
		return fmt.Errorf("no connect client for %s", svc)
	}
	m := client.MethodByName(name)
	if !m.IsValid() {
		return fmt.Errorf("no connect method %s", method)
	}
	out := m.Call([]reflect.Value{reflect.ValueOf(context.WithValue(ctx, tokenKey{}, token)), reflect.ValueOf(req)})
	if err, _ := out[1].Interface().(error); err != nil {
		return connectToStatus(err)
	}
	proto.Merge(resp, out[0].Interface().(proto.Message))
	return nil
}

// connectToStatus turns a Connect error into a gRPC status error with the same details.
func connectToStatus(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return status.Error(codes.Unknown, err.Error())
	}
	st := &spb.Status{Code: int32(ce.Code()), Message: ce.Message()}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		a, aerr := anypb.New(v)
		if aerr == nil {
			st.Details = append(st.Details, a)
		}
	}
	return status.ErrorProto(st)
}

// restInvoker calls the REST facade, building each request from the method's google.api.http rule,
// as an outside REST client following the OpenAPI document would.
type restInvoker struct {
	base string
	http *http.Client
}

var methodCache sync.Map // full method name -> protoreflect.MethodDescriptor

func methodDescriptor(method string) (protoreflect.MethodDescriptor, error) {
	if md, ok := methodCache.Load(method); ok {
		return md.(protoreflect.MethodDescriptor), nil
	}
	svc, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, err
	}
	md := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(name))
	if md == nil {
		return nil, fmt.Errorf("no method %s", method)
	}
	methodCache.Store(method, md)
	return md, nil
}

func (r *restInvoker) Invoke(ctx context.Context, method, token string, req, resp proto.Message) error {
	md, err := methodDescriptor(method)
	if err != nil {
		return err
	}
	rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
	if rule == nil {
		return fmt.Errorf("%s has no REST mapping", method)
	}
	verb, tmpl := httpPattern(rule)
	path, used, err := expandPath(tmpl, req)
	if err != nil {
		return err
	}
	var body io.Reader
	q := url.Values{}
	switch rule.Body {
	case "*":
		b, err := protojson.Marshal(req)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	case "":
		addQuery(q, req.ProtoReflect(), "", used)
	default:
		fd := req.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(rule.Body))
		b, err := protojson.Marshal(req.ProtoReflect().Get(fd).Message().Interface())
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
		used[rule.Body] = true
		addQuery(q, req.ProtoReflect(), "", used)
	}
	u := r.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	hreq, err := http.NewRequestWithContext(ctx, verb, u, body)
	if err != nil {
		return err
	}
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		hreq.Header.Set("Authorization", "Bearer "+token)
	}
	return DoREST(r.http, hreq, resp)
}

// DoREST sends a REST request and decodes a success into resp (which may be nil) or an error body
// into a gRPC status error, checking that the HTTP status matches grpc-gateway's mapping.
func DoREST(hc *http.Client, hreq *http.Request, resp proto.Message) error {
	hresp, err := hc.Do(hreq)
	if err != nil {
		return err
	}
	defer hresp.Body.Close()
	raw, err := io.ReadAll(hresp.Body)
	if err != nil {
		return err
	}
	if hresp.StatusCode == http.StatusOK {
		if resp == nil {
			return nil
		}
		return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(raw, resp)
	}
	st := &spb.Status{}
	if err := protojson.Unmarshal(raw, st); err != nil {
		return fmt.Errorf("HTTP %d with a body that is not a status: %s", hresp.StatusCode, raw)
	}
	if want := HTTPStatus(codes.Code(st.Code)); want != hresp.StatusCode {
		return fmt.Errorf("HTTP %d for gRPC code %s, want HTTP %d", hresp.StatusCode, codes.Code(st.Code), want)
	}
	return status.ErrorProto(st)
}

// HTTPStatus is grpc-gateway's HTTP status for a gRPC code.
func HTTPStatus(c codes.Code) int {
	switch c {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Canceled:
		return 499
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

func httpPattern(r *annotations.HttpRule) (verb, tmpl string) {
	switch p := r.Pattern.(type) {
	case *annotations.HttpRule_Get:
		return http.MethodGet, p.Get
	case *annotations.HttpRule_Post:
		return http.MethodPost, p.Post
	case *annotations.HttpRule_Put:
		return http.MethodPut, p.Put
	case *annotations.HttpRule_Patch:
		return http.MethodPatch, p.Patch
	case *annotations.HttpRule_Delete:
		return http.MethodDelete, p.Delete
	}
	return "", ""
}

// expandPath fills {field.path} segments of a template from the request.
func expandPath(tmpl string, req proto.Message) (string, map[string]bool, error) {
	used := map[string]bool{}
	var b strings.Builder
	for {
		i := strings.IndexByte(tmpl, '{')
		if i < 0 {
			b.WriteString(tmpl)
			return b.String(), used, nil
		}
		j := strings.IndexByte(tmpl[i:], '}')
		b.WriteString(tmpl[:i])
		field := tmpl[i+1 : i+j]
		v, err := fieldString(req.ProtoReflect(), field)
		if err != nil {
			return "", nil, err
		}
		b.WriteString(url.PathEscape(v))
		used[strings.Split(field, ".")[0]] = true
		tmpl = tmpl[i+j+1:]
	}
}

func fieldString(m protoreflect.Message, path string) (string, error) {
	parts := strings.Split(path, ".")
	for i, p := range parts {
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(p))
		if fd == nil {
			return "", fmt.Errorf("no field %s", path)
		}
		if i == len(parts)-1 {
			return m.Get(fd).String(), nil
		}
		m = m.Get(fd).Message()
	}
	return "", nil
}

// addQuery encodes the populated fields of m that are not in skip as query parameters.
func addQuery(q url.Values, m protoreflect.Message, prefix string, skip map[string]bool) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := prefix + string(fd.Name())
		if prefix == "" && skip[string(fd.Name())] {
			return true
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				q.Add(name, scalarString(fd, l.Get(i)))
			}
		case fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.FieldMask":
			// grpc-gateway reads a FieldMask query parameter as comma-separated paths.
			var paths []string
			l := v.Message().Get(fd.Message().Fields().ByName("paths")).List()
			for i := 0; i < l.Len(); i++ {
				paths = append(paths, l.Get(i).String())
			}
			q.Set(name, strings.Join(paths, ","))
		case fd.Kind() == protoreflect.MessageKind:
			addQuery(q, v.Message(), name+".", nil)
		default:
			q.Set(name, scalarString(fd, v))
		}
		return true
	})
}

func scalarString(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	if fd.Kind() == protoreflect.EnumKind {
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
	}
	return v.String()
}

// Reason returns the ErrorInfo reason of a status error, "" if it has none.
func Reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	return ""
}

// Metadata returns the ErrorInfo metadata of a status error.
func Metadata(err error) map[string]string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Metadata
		}
	}
	return nil
}

// Violations returns the fields named by the BadRequest detail of a status error.
func Violations(err error) []string {
	var out []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				out = append(out, v.Field)
			}
		}
	}
	return out
}
