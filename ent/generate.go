// Package ent is Gatehouse's generated data access code; the schema is in ./schema.
package ent

//go:generate go run entc.go
