// Module protodeps pins the third-party .proto sources (google/api, buf/validate, the OpenAPI options) that
// buf compiles against. Nothing imports it; scripts/protodeps.sh copies the pinned
// files out of the Go module cache.
module github.com/gatehouse/gatehouse/tools/protodeps

go 1.26

require (
	github.com/bufbuild/protovalidate v1.2.2
	github.com/grpc-ecosystem/grpc-gateway v1.16.0
	github.com/grpc-ecosystem/grpc-gateway/v2 v2.33.0
)
