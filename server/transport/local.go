package transport

import (
	"context"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// LocalConn is the REST gateway's connection to the node's own services. A unary call runs the
// service's handler in process, behind the same interceptor as the gRPC port (GRPCServerOptions):
// the gateway's metadata becomes the call's incoming metadata, so the interceptor authenticates,
// validates, authorises, maps errors and logs exactly as for a call over the port. Only the
// encoding of both messages and the loopback round trip are saved, which were a quarter of the
// node's CPU in a REST ValidateSession (issue 16's profile). Streams go over streams, a connection
// to the gRPC port (DialSelf).
//
// Register the services on it as on the gRPC server (it is a grpc.ServiceRegistrar) before the
// gateway's first call.
type LocalConn struct {
	streams   grpc.ClientConnInterface
	intercept grpc.UnaryServerInterceptor
	limit     int
	methods   map[string]localMethod
}

// localMethod is a registered unary method: the service's implementation and the generated
// handler that decodes the request and calls it through an interceptor.
type localMethod struct {
	impl    any
	handler grpc.MethodHandler
}

// NewLocalConn returns the gateway's connection, with the interceptor of o and streams for server
// streams. It panics if o.Authenticator or o.Rules is nil.
func NewLocalConn(o Options, streams grpc.ClientConnInterface) *LocalConn {
	return &LocalConn{streams: streams, intercept: newCore(o).unaryGRPC, limit: o.maxRequestBytes(), methods: map[string]localMethod{}}
}

var (
	_ grpc.ClientConnInterface = (*LocalConn)(nil)
	_ grpc.ServiceRegistrar    = (*LocalConn)(nil)
)

// RegisterService implements grpc.ServiceRegistrar.
func (c *LocalConn) RegisterService(desc *grpc.ServiceDesc, impl any) {
	for _, m := range desc.Methods {
		c.methods["/"+desc.ServiceName+"/"+m.MethodName] = localMethod{impl: impl, handler: m.Handler}
	}
}

// gatewayPeer is the peer of the gateway's calls, as the gRPC port would see its loopback
// connection; the interceptor takes the client's address from x-forwarded-for (gatewayMetadata).
var gatewayPeer = &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}

// Invoke implements grpc.ClientConnInterface: it runs a unary method in process.
func (c *LocalConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	m, ok := c.methods[method]
	if !ok {
		return status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	req, ok := args.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "the request of %s is a %T, not a protobuf message", method, args)
	}
	out, ok := reply.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "the reply of %s is a %T, not a protobuf message", method, reply)
	}
	if err := c.checkSize(req); err != nil {
		return err
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	st := &localStream{method: method}
	sctx := metadata.NewIncomingContext(metadata.NewOutgoingContext(ctx, nil), md)
	sctx = grpc.NewContextWithServerTransportStream(peer.NewContext(sctx, gatewayPeer), st)
	// NOTE: the handler gets a copy of the request, as it would decode one: the interceptor
	// normalises ids in place.
	dec := func(in any) error {
		msg, ok := in.(proto.Message)
		if !ok {
			return status.Errorf(codes.Internal, "the handler of %s decodes into a %T", method, in)
		}
		proto.Merge(msg, req)
		return nil
	}
	resp, err := m.handler(m.impl, sctx, dec, c.intercept)
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = st.header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = st.trailer
		}
	}
	if err != nil {
		return err
	}
	msg, ok := resp.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "%s answered a %T", method, resp)
	}
	proto.Reset(out)
	proto.Merge(out, msg)
	return nil
}

// checkSize refuses a request over the gRPC port's receive limit (GRPCServerOptions) as
// LimitRequestBodies refuses a body: a JSON body under the limit can encode to a larger message (a
// list of negative enum numbers takes three bytes of JSON and ten of protobuf each), which the port
// would refuse with grpc's own text and no ErrorInfo.
func (c *LocalConn) checkSize(m proto.Message) error {
	if proto.Size(m) > c.limit {
		return tooLargeStatus(int64(c.limit)).Err()
	}
	return nil
}

// NewStream implements grpc.ClientConnInterface over the connection to the gRPC port; the
// request is held to the same limit as a unary call's.
func (c *LocalConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := c.streams.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, err
	}
	return sizedClientStream{ClientStream: cs, conn: c}, nil
}

// sizedClientStream is a stream of the gateway whose messages are held to the port's limit.
type sizedClientStream struct {
	grpc.ClientStream
	conn *LocalConn
}

// SendMsg sends m unless it is over the limit.
func (s sizedClientStream) SendMsg(m any) error {
	if msg, ok := m.(proto.Message); ok {
		if err := s.conn.checkSize(msg); err != nil {
			return err
		}
	}
	return s.ClientStream.SendMsg(m)
}

// localStream is the grpc.ServerTransportStream of an in-process call: it keeps what the handler
// sets as header and trailer metadata, for the gateway's call options.
type localStream struct {
	method          string
	header, trailer metadata.MD
}

func (s *localStream) Method() string { return s.method }

func (s *localStream) SetHeader(md metadata.MD) error {
	s.header = metadata.Join(s.header, md)
	return nil
}

func (s *localStream) SendHeader(md metadata.MD) error { return s.SetHeader(md) }

func (s *localStream) SetTrailer(md metadata.MD) error {
	s.trailer = metadata.Join(s.trailer, md)
	return nil
}
