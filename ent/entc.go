//go:build ignore

// entc.go runs ent's code generation with the project's features. `go generate ./ent` runs it in
// place; scripts/checkgenerate.sh runs it into a temporary directory with -target.
package main

import (
	"flag"
	"log"

	"entgo.io/ent/entc"
	"entgo.io/ent/entc/gen"
)

func main() {
	target := flag.String("target", ".", "output directory")
	schema := flag.String("schema", "./schema", "schema directory")
	flag.Parse()
	err := entc.Generate(*schema, &gen.Config{
		Target:  *target,
		Package: "github.com/gatehouse/gatehouse/ent",
		Features: []gen.Feature{
			gen.FeatureExecQuery, gen.FeatureUpsert, gen.FeatureLock, gen.FeatureModifier,
		},
	})
	if err != nil {
		log.Fatalf("running ent codegen: %v", err)
	}
}
