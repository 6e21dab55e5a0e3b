// Package openapi embeds the merged OpenAPI v2 document that protoc-gen-openapiv2 writes beside this
// file (make generate). This file is the only hand-written one under gen/.
package openapi

import _ "embed"

// JSON is the OpenAPI v2 document of the REST API.
//
//go:embed gatehouse.swagger.json
var JSON []byte
