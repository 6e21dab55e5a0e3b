// Package ent is Gatehouse's generated data access code; the schema is in ./schema.
package ent

//go:generate go tool ent generate --feature sql/execquery,sql/upsert,sql/lock,sql/modifier ./schema
