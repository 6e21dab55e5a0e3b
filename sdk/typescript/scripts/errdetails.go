//go:build ignore

// Command errdetails writes google/rpc/error_details.proto (ErrorInfo, BadRequest, ...) as a
// FileDescriptorSet, which buf.gen.ts.yaml reads as a binary image, so that the TypeScript SDK can
// read the details of Gatehouse's errors. It takes the descriptor compiled into the pinned
// google.golang.org/genproto/googleapis/rpc module, the same one the server sends its details
// with.
//
//	go run ./sdk/typescript/scripts/errdetails.go -o build/protodeps-ts/error_details.binpb
//
// NOTE: the .proto files in the Go module cache (grpc-gateway v1's third_party) predate ErrorInfo,
// and the googleapis protos on npm weigh 80 MB; the descriptor the server itself uses is exact and
// free. It carries no comments, so the generated TypeScript has none either.
package main

import (
	"flag"
	"log"
	"os"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func main() {
	out := flag.String("o", "", "output file")
	flag.Parse()
	if *out == "" {
		log.Fatal("errdetails: -o is required")
	}
	set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		// Imports first, as in any FileDescriptorSet.
		protodesc.ToFileDescriptorProto(durationpb.File_google_protobuf_duration_proto),
		protodesc.ToFileDescriptorProto(errdetails.File_google_rpc_error_details_proto),
	}}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(set)
	if err != nil {
		log.Fatalf("errdetails: %v", err)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		log.Fatalf("errdetails: %v", err)
	}
}
