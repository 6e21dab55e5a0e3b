//go:build naivereader

package store

// Build with -tags naivereader to read the log naively, `id > cursor` in id order, on PostgreSQL
// too (see naiveReader in log.go): a demonstration that the fault tests fail against such a
// reader, never a build to ship. Consistency tokens returned by mutations keep their transaction
// ids and are not understood by it.
func init() { naiveReader = true }
