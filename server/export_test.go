package server

// CloseGRPCListener closes the listener under n's gRPC server, as a failing network would: the
// server's Serve then fails.
func CloseGRPCListener(n *Node) error { return n.grpcLis.Close() }

// OnStopStreams makes Shutdown call f where it ends the node's streams, before the node's own
// stopStreams if it has one.
func OnStopStreams(n *Node, f func()) {
	next := n.stopStreams
	n.stopStreams = func() {
		f()
		if next != nil {
			next()
		}
	}
}

// HoldHTTPHandler counts one more HTTP handler running on n, as a handler still busy after its
// connection was cut would be, until release is called. It returns false once the node has
// stopped admitting handlers.
func HoldHTTPHandler(n *Node) (release func(), ok bool) {
	if !n.httpHandlers.enter() {
		return nil, false
	}
	return n.httpHandlers.leave, true
}
